"""Throughput of embed_layers against the bare model forward on the same batches.

For each packaged model, on BBC News headlines, side by side in one run:

- ours:  ``embed_layers`` with a cold activation cache (tokenize, sort by
         length, pad, forward, pool all layers three ways, write the cache);
- ours, no cache: the same without the cache, the engine's own overhead;
- bare:  the model's base module with ``output_hidden_states=True`` on the
         very same padded batches, tokenization excluded, nothing pooled;
- naive: what a script usually does: batches of 32 in data order, the full
         model (with its language-model head), mean pooling per layer;
- warm:  ``embed_layers`` again, every text a cache hit.

Prints texts per second and the ratios ours/bare (goal: 1.15 or less),
the same without the cache, and naive/ours. Timings are the best of N
repeats taken in turn (bare, naive, ours, ours without cache, bare, ...), so
drift on a busy machine hits every column alike. Run: ``make bench`` or ``python benchmarks/bench_capture.py [--device cuda]``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import torch
from common import capture_arguments, synchronize

from layerbench import embed_layers, load_model
from layerbench.capture import batching
from layerbench.data import load_packaged


def bare_batches(handle, texts, max_length):
    """The padded batches embed_layers runs, built outside any timing."""
    batches = []
    for chunk, _, _mask in batching.iter_batches(handle, texts, "auto", max_length):
        ids = handle.tokenizer([texts[i] for i in chunk], truncation=True, max_length=max_length)["input_ids"]
        batches.append(batching._pad(ids, handle.tokenizer.pad_token_id or 0, handle.device))
    return batches


def time_bare(handle, batches) -> float:
    began = time.perf_counter()
    kwargs = {"use_cache": False} if handle.is_causal else {}
    with torch.inference_mode():
        for ids, mask in batches:
            handle.model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True, **kwargs)
    synchronize(handle.device)
    return time.perf_counter() - began


def time_naive(handle, texts, max_length, batch=32) -> float:
    began = time.perf_counter()
    pad = handle.tokenizer.pad_token is not None
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            enc = handle.tokenizer(texts[start : start + batch], padding=pad, truncation=True, max_length=max_length, return_tensors="pt").to(handle.device)
            out = handle.model(**enc, output_hidden_states=True)
            m = enc["attention_mask"].unsqueeze(-1).float()
            [((h.float() * m).sum(1) / m.sum(1)).cpu() for h in out.hidden_states]
    synchronize(handle.device)
    return time.perf_counter() - began


def time_ours(handle, texts, max_length, cache) -> float:
    began = time.perf_counter()
    embed_layers(handle, texts, "mean", "auto", max_length, cache=cache)
    synchronize(handle.device)
    return time.perf_counter() - began


def main() -> None:
    args = capture_arguments(__doc__.splitlines()[0])
    headlines = load_packaged("bbc-news", {"field": "headline"}).texts
    sizes = args.sizes
    print(f"{'model':40} {'device':7} {'texts':>5} {'ours t/s':>9} {'bare t/s':>9} {'ours/bare':>9} {'no-cache/bare':>13} {'naive/ours':>10} {'warm x':>7}")
    scratch = tempfile.mkdtemp(prefix="layerbench-bench-")
    for name, n in sizes.items():
        handle = load_model(name, device=args.device, dtype=args.dtype)
        if handle.device.type == "cuda":
            n *= 8
        texts = (headlines * (1 + n // len(headlines)))[:n]
        texts = [f"{t} ({i})" for i, t in enumerate(texts)]  # distinct, so the cache cannot dedupe
        max_length = 64
        batches = bare_batches(handle, texts, max_length)
        time_bare(handle, batches[:1])  # warm-up: first-call allocations and kernel selection
        timings: dict[str, list[float]] = {"bare": [], "naive": [], "ours": [], "nocache": []}
        for _ in range(args.repeats):
            timings["bare"].append(time_bare(handle, batches))
            timings["naive"].append(time_naive(handle, texts, max_length))
            # Cold caches are kept until the end: deleting thousands of files
            # mid-run (on a disk mounted with discard) slows whatever comes next.
            timings["ours"].append(time_ours(handle, texts, max_length, tempfile.mkdtemp(dir=scratch)))
            timings["nocache"].append(time_ours(handle, texts, max_length, False))
        bare, naive, ours_time, nocache = (min(timings[k]) for k in ("bare", "naive", "ours", "nocache"))
        warm_dir = tempfile.mkdtemp(dir=scratch)
        time_ours(handle, texts, max_length, warm_dir)
        warm = time_ours(handle, texts, max_length, warm_dir)
        print(
            f"{name:40} {handle.device.type:7} {n:5d} {n / ours_time:9.1f} {n / bare:9.1f} {ours_time / bare:9.3f} {nocache / bare:13.3f} "
            f"{naive / ours_time:10.2f} {ours_time / warm:7.1f}"
        )


    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
