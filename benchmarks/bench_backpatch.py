"""Back-patching, where its time goes and the code before against ours, side by side in one run; and ours against the naive way.

Side by side (the default), per model and protocol: the five checks of every packaged query (before: Hugging Face's
``generate`` per batch; ours: :func:`layerbench.models.generation.decode_rows`), the logit-lens readout, and the sweep
of a seeded sample of the queries the sweep runs on (``--queries``; 0: all of them). The sweep before (commit 11d6f04)
ran every patched row through every block at every step and read the full logits; ours computes a block's rows once
per distinct generated prefix below each row's target layer (:mod:`layerbench.models.branching`) and reads the greedy
token through the bounded bfloat16 product (:mod:`layerbench.models.greedy`). The profile prints each stage's seconds
(checks, clean and patched prompt passes, greedy steps, lens readout), the decoding's row-blocks run against what
running every row through every block costs, and the rows per batch. Every continuation must be the same text, and
every verdict the same, both ways.

``--naive`` instead times ours against the naive way (the authors': a full greedy generation from scratch for every
(position, ls, lt) variant), on ``--naive-queries`` packaged queries at ``--layer-step``; the naive way costs about 0.3 s
per variant on 2 CPU cores, so it is timed on ``--naive-sample`` variants per query and its total is that per-variant
time times the number of variants.

Run: ``python benchmarks/bench_backpatch.py [--models smollm2-135m-q4,gemma3-270m-base-q4] [--protocol layerbench,biran2024]
[--queries 4] | --naive [--naive-queries 20 --layer-step 3 --naive-sample 8]``. Internal consistency: ``bench_consistency.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import random
import time

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from common import generate_before

from layerbench import load_model
from layerbench.data import load_packaged, load_task_data
from layerbench.data.two_hop import mentions
from layerbench.evaluators import backpatch
from layerbench.evaluators.backpatch import (
    CHECKS,
    answer_check,
    check_prompts,
    e1_last_token,
    layer_pairs,
    lens_rows,
    queries_of,
    run_checks,
    settled,
    sweep_query,
)
from layerbench.families.backpatch import BackpatchSettings
from layerbench.models.generation import greedy_from_cache
from layerbench.models.greedy import GreedyReadout
from layerbench.models.residual import one_position_logits, patch_positions, record_layers
from layerbench.specs import get_task
from layerbench.specs.protocols import get_protocol


def naive_variant(handle, prompt: str, p: int, ls: int, lt: int, max_new_tokens: int) -> str:
    """From scratch: a clean pass for the source state, then the patched prompt and every greedy step, batch 1, no early stop."""
    model, tok = handle.model, handle.tokenizer
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad(), record_layers(handle, [ls]) as recorded:
        model(input_ids=ids)
    with torch.no_grad(), patch_positions(handle, torch.tensor([lt]), p, recorded[ls][0][:, p]):
        out = model(input_ids=ids, use_cache=True)
    cache, token, tokens = out.cache, out.logits[:, -1].argmax(-1), []
    for _ in range(max_new_tokens):
        if token.item() == tok.eos_token_id:
            break
        tokens.append(token.item())
        with torch.no_grad():
            out = model(input_ids=token.view(1, 1), cache=cache, use_cache=True)
        cache, token = out.cache, out.logits[:, -1].argmax(-1)
    return tok.decode(tokens, skip_special_tokens=True)


def sweep_before(handle, prompt: str, positions: dict[str, int], pairs: list[tuple[int, int]], names: list[str], max_new_tokens: int,
                 batch_size: int, substring: bool = False, times: dict[str, float] | None = None) -> dict[tuple[str, int, int], str]:
    """The sweep as it was (commit 11d6f04): a copy of the clean cache per batch, every row through every block at every step, full
    logits; the seconds of its greedy steps added to ``times["greedy steps"]``."""
    times = {} if times is None else times
    model = handle.model
    ids = handle.tokenizer(prompt, return_tensors="pt")["input_ids"]
    length, n_layers = ids.shape[1], handle.n_layers
    with torch.no_grad(), record_layers(handle, list(range(n_layers + 1))) as recorded:
        clean = model(input_ids=ids, use_cache=True)
    states = torch.stack([recorded[layer][0][0] for layer in range(n_layers + 1)])
    out = {}
    for position, p in positions.items():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            sources, targets = torch.tensor([ls for ls, _ in chunk]), torch.tensor([lt for _, lt in chunk])
            cache = None
            if p > 0:
                cache = copy.deepcopy(clean.cache)
                if p < length:
                    cache.crop(p - length)
                cache.batch_repeat_interleave(len(chunk))
            with torch.no_grad(), patch_positions(handle, targets, 0, states[sources, p]):
                result = model(input_ids=ids[:, p:].expand(len(chunk), -1), cache=cache, use_cache=True, **one_position_logits(model))
            began = time.perf_counter()
            texts = greedy_from_cache(handle, result.logits[:, -1], result.cache, max_new_tokens, lambda t: settled(t, names, substring))
            times["greedy steps"] = times.get("greedy steps", 0.0) + time.perf_counter() - began
            out |= {(position, ls, lt): text for (ls, lt), text in zip(chunk, texts)}
    return out


def side_by_side(handle, protocol: str, n_queries: int, seed: int = 0) -> None:
    """Checks, lens readout and a sample of the sweep, before and ours, with the profile (module docstring)."""
    spec = get_task("backpatch-two-hop")
    if protocol != "layerbench":
        spec = spec.under(protocol, get_protocol(protocol).settings)
    settings = spec.settings
    queries = queries_of(load_task_data(spec), "bench")
    names_of, found = answer_check(settings)
    profile: dict[str, dict[str, float]] = {"before": {}, "ours": {}}

    began = time.perf_counter()
    with patched(backpatch, "generate", generate_before):
        checks_before = run_checks(handle, queries, settings)
    profile["before"]["checks"] = time.perf_counter() - began
    began = time.perf_counter()
    checks = run_checks(handle, queries, settings)
    profile["ours"]["checks"] = time.perf_counter() - began
    checks_differ = sum(int((checks[c] != checks_before[c]).sum()) for c in CHECKS)

    prompts = [check_prompts(q, settings)["composition"][0] for q in queries]
    began = time.perf_counter()
    lens_rows(handle, queries, prompts, settings.batch_size)
    profile["before"]["lens readout"] = profile["ours"]["lens readout"] = time.perf_counter() - began  # the same code both ways

    known = checks["first_hop"] & checks["second_hop"] & ~checks["entity_shortcut"] & ~checks["relation_shortcut"]
    swept = np.flatnonzero(known)
    sample = sorted(random.Random(seed).sample(list(swept), min(n_queries, len(swept)))) if n_queries else list(swept)
    pairs = layer_pairs(handle.n_layers, settings)
    readout = GreedyReadout(handle)
    tally: dict[str, int] = {}
    texts_differ = verdicts_differ = variants = 0
    substring = settings.answer_match == "substring"
    for i in sample:
        q, prompt = queries[i], prompts[i]
        positions = {"e1-last": e1_last_token(handle, prompt, q.e1), "prompt-last": len(handle.tokenizer(prompt)["input_ids"]) - 1}
        names = names_of(q, "e3")
        began = time.perf_counter()
        before = sweep_before(handle, prompt, positions, pairs, names, settings.max_new_tokens, settings.batch_size, substring, profile["before"])
        profile["before"]["sweep"] = profile["before"].get("sweep", 0.0) + time.perf_counter() - began
        with timed(backpatch, "greedy_branches", profile["ours"], "greedy steps"):
            began = time.perf_counter()
            ours = sweep_query(handle, prompt, positions, pairs, names, settings.max_new_tokens, settings.batch_size, substring, readout, tally)
            profile["ours"]["sweep"] = profile["ours"].get("sweep", 0.0) + time.perf_counter() - began
        variants += len(ours)
        texts_differ += sum(ours[key] != before[key] for key in ours)
        verdicts_differ += sum(found(ours[key], names) != found(before[key], names) for key in ours)
    for way in ("before", "ours"):
        profile[way]["prompt passes"] = profile[way].get("sweep", 0.0) - profile[way].get("greedy steps", 0.0)

    print(f"{handle.name} under {protocol}: {len(queries)} queries, {len(swept)} swept ({len(pairs)} (ls, lt) pairs x {len(positions)} positions each), "
          f"{len(sample)} of them timed (seed {seed}); CPU, {torch.get_num_threads()} threads; readout {'bounded bfloat16' if readout.prefiltered else 'full float32'}")
    print(f"  {'stage':16s} {'before':>9s} {'ours':>9s} {'before/ours':>12s}")
    for stage in ("checks", "lens readout", "prompt passes", "greedy steps", "sweep"):
        b, o = profile["before"].get(stage, 0.0), profile["ours"].get(stage, 0.0)
        print(f"  {stage:16s} {b:8.1f}s {o:8.1f}s {b / o if o else float('nan'):11.2f}x")
    per_query_before = profile["before"]["sweep"] / max(len(sample), 1)
    per_query_ours = profile["ours"]["sweep"] / max(len(sample), 1)
    fixed_before = profile["before"]["checks"] + profile["before"]["lens readout"]
    fixed_ours = profile["ours"]["checks"] + profile["ours"]["lens readout"]
    whole_before, whole_ours = fixed_before + per_query_before * len(swept), fixed_ours + per_query_ours * len(swept)
    print(f"  the task ({len(swept)} swept queries at the sample's mean per query): {whole_before:.0f} s before, {whole_ours:.0f} s ours, "
          f"{whole_before / whole_ours:.2f}x")
    if tally:
        print(f"  greedy steps: {tally['steps']} batch steps; blocks run for {tally['computed_blocks']:,} rows against {tally['row_blocks']:,} "
              f"rows x blocks ({tally['computed_blocks'] / tally['row_blocks']:.1%}); batches of up to {settings.batch_size} rows")
    print(f"  checks: verdicts that differ {checks_differ} of {len(queries) * len(CHECKS)}; sweep: texts that differ {texts_differ}, "
          f"verdicts that differ {verdicts_differ}, of {variants} patched variants")


@contextlib.contextmanager
def patched(module, name: str, value):
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


@contextlib.contextmanager
def timed(module, name: str, into: dict[str, float], stage: str):
    """Add the seconds spent in ``module.name`` to ``into[stage]`` while inside."""
    function = getattr(module, name)

    def run(*args, **kwargs):
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            into[stage] = into.get(stage, 0.0) + time.perf_counter() - began

    with patched(module, name, run):
        yield


def naive_side_by_side(handle, n_queries: int, layer_step: int, naive_sample: int) -> None:
    """Ours against the naive way (module docstring)."""
    settings = BackpatchSettings(layer_step=layer_step)
    queries = queries_of(load_packaged("two-hop-queries", {"n": n_queries, "seed": 0}), "bench")
    pairs = layer_pairs(handle.n_layers, settings)
    rng = random.Random(0)
    ours_seconds = naive_seconds = 0.0
    n_variants = n_naive = agree = prefix = 0
    for q in queries:
        positions = {"e1-last": e1_last_token(handle, q.source_prompt, q.e1),
                     "prompt-last": len(handle.tokenizer(q.source_prompt)["input_ids"]) - 1}
        names = q.answers("e3")
        began = time.perf_counter()
        ours = sweep_query(handle, q.source_prompt, positions, pairs, names, settings.max_new_tokens, settings.batch_size)
        ours_seconds += time.perf_counter() - began
        n_variants += len(ours)
        for key in rng.sample(sorted(ours), naive_sample):
            position, ls, lt = key
            began = time.perf_counter()
            naive = naive_variant(handle, q.source_prompt, positions[position], ls, lt, settings.max_new_tokens)
            naive_seconds += time.perf_counter() - began
            n_naive += 1
            agree += mentions(naive, names) == mentions(ours[key], names)
            prefix += naive.startswith(ours[key])
    per_naive = naive_seconds / n_naive
    naive_total = per_naive * n_variants
    print(f"{handle.name}: {len(queries)} queries x {len(pairs)} (ls, lt) pairs x 2 positions = {n_variants} patched generations "
          f"(layer step {layer_step}, {settings.max_new_tokens} new tokens)")
    print(f"  ours:  {ours_seconds:8.1f} s  ({ours_seconds / n_variants * 1000:.1f} ms per variant)")
    print(f"  naive: {per_naive * 1000:8.1f} ms per variant, measured on {n_naive} sampled variants; x {n_variants} = {naive_total:.1f} s")
    print(f"  naive / ours: {naive_total / ours_seconds:.1f}x   (goal: 10x)")
    print(f"  same verdict on {agree}/{n_naive} sampled variants; our text a prefix of the naive one on {prefix}/{n_naive}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m-q4,gemma3-270m-base-q4")
    parser.add_argument("--protocol", default="layerbench,biran2024")
    parser.add_argument("--queries", type=int, default=4, help="swept queries timed per model and protocol (seeded sample; 0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--naive", action="store_true", help="ours against the naive way instead")
    parser.add_argument("--naive-queries", type=int, default=20)
    parser.add_argument("--layer-step", type=int, default=3)
    parser.add_argument("--naive-sample", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    for name in args.models.split(","):
        handle = load_model(name, device="cpu")
        if args.naive:
            naive_side_by_side(handle, args.naive_queries, args.layer_step, args.naive_sample)
            continue
        for protocol in args.protocol.split(","):
            side_by_side(handle, protocol, args.queries, args.seed)


if __name__ == "__main__":
    main()
