"""What the benchmarks share: the capture benchmarks' command line, the device sync before a clock is read, and generation as it was before (the side by side of the intervention benchmarks)."""
from __future__ import annotations

import argparse
from typing import Any

import torch

from layerbench.models.generation import padded_on

PACKAGED_SIZES = {"sentence-transformers/all-MiniLM-L6-v2": 1024, "smollm2-135m-q4": 256}  # texts timed per packaged model


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timing covers it (nothing to do on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def capture_arguments(description: str) -> argparse.Namespace:
    """``--device``, ``--dtype``, ``--repeats`` and ``--models`` (adds ``sizes``: model -> texts timed: the packaged two, else 512 each)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each timing")
    parser.add_argument("--models", nargs="*", help="models to time instead of the packaged two (any name load_model takes)")
    args = parser.parse_args()
    args.sizes = {name: 512 for name in args.models} if args.models else dict(PACKAGED_SIZES)
    return args


def generate_before(handle, prompts: list[str], max_new_tokens: int, *, batch_size: int = 16, sample: bool = False, temperature: float = 1.0,
                    top_p: float = 1.0, num_return_sequences: int = 1, seed: int = 0, stop_strings: list[str] | None = None, desc: str = "") -> list[list[str]]:
    """The generation as it was (commit 11d6f04): Hugging Face's ``generate``, after one prefill of each prompt's tokens but the last
    repeated for its K samples."""
    out: list[list[str]] = []
    with padded_on(handle, "left") as tok:
        for start in range(0, len(prompts), batch_size):
            enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(handle.device)
            options: dict[str, Any] = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if sample else dict(do_sample=False)
            if stop_strings:
                options |= dict(stop_strings=stop_strings, tokenizer=tok)
            if sample:
                torch.manual_seed(seed + start)
            with torch.no_grad():
                ids, mask = enc["input_ids"], enc["attention_mask"]
                if num_return_sequences > 1 and ids.shape[1] > 1:
                    positions = (mask.cumsum(-1) - 1).clamp(min=0)
                    cache = handle.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], use_cache=True).cache
                    cache.batch_repeat_interleave(num_return_sequences)
                    new = handle.model.generate(input_ids=ids.repeat_interleave(num_return_sequences, dim=0), attention_mask=mask.repeat_interleave(num_return_sequences, dim=0),
                                                cache=cache, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **options)
                else:
                    new = handle.model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences, pad_token_id=tok.pad_token_id, **options)
            texts = tok.batch_decode(new[:, ids.shape[1]:], skip_special_tokens=True)
            out += [texts[i : i + num_return_sequences] for i in range(0, len(texts), num_return_sequences)]
    return out
