"""The latent-language readout against a plain forward pass, and against the authors' way, side by side in one run.

- plain: the model's forward pass on the prompts in batches (its logits at the last position only): what any evaluation pays;
- ours: the same pass with every layer's last-token state recorded, then the logit lens of every layer and the probability
  mass of each language's tokens (:func:`layerbench.models.residual.lens_masses`): one pass per batch, no per-layer pass;
- theirs (Translation.ipynb): one prompt at a time, every block output recorded, the lens on all positions of every layer
  (``unemb(latents)`` before ``[:, -1]``), a softmax, two sums.

Prints prompts per second and the ratios, for SmolLM2 and Gemma 3.

Run: ``python benchmarks/bench_latent_language.py [--prompts 64] [--models smollm2-135m-q4,gemma3-270m-base-q4]``.
"""
from __future__ import annotations

import argparse
import os
import time
from functools import partial

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from layerbench import load_model
from layerbench.data import load_packaged
from layerbench.data.cldr import KINDS
from layerbench.evaluators.latent_language import prefix_token_ids, token_sets
from layerbench.models.generation import padded_on
from layerbench.models.residual import last_token_states, lens_masses, one_position_logits

LANGUAGES = ["en", "fr", "de", "es", "zh", "ja", "ru", "ko", "hi"]


def clock(function) -> float:
    began = time.perf_counter()
    function()
    return time.perf_counter() - began


def plain(handle, prompts: list[str], batch_size: int) -> None:
    with padded_on(handle, "right") as tok, torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            handle.model(**tok(prompts[start : start + batch_size], return_tensors="pt", padding=True), **one_position_logits(handle.model))


def ours(handle, prompts: list[str], sets, batch_size: int) -> None:
    lens_masses(handle, last_token_states(handle, prompts, batch_size), sets)


def theirs(handle, prompts: list[str], sets) -> None:
    model, anatomy = handle.model, handle.anatomy
    for prompt, per_language in zip(prompts, sets):
        outputs = []
        hooks = [block.register_forward_hook(lambda m, a, o, outputs=outputs: outputs.append(o[0] if isinstance(o, tuple) else o)) for block in anatomy.blocks]
        try:
            with torch.no_grad():
                model(**handle.tokenizer(prompt, return_tensors="pt"))
                latents = torch.cat(outputs)  # [L, T, D]
                last = anatomy.unembedding(anatomy.final_norm(latents))[:, -1, :].float().softmax(dim=-1)
                for ids in per_language[:2]:
                    last[:, ids].sum(dim=-1)
        finally:
            for hook in hooks:
                hook.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", default="smollm2-135m-q4,gemma3-270m-base-q4")
    args = parser.parse_args()
    data = load_packaged("cldr-latent-language", {"kind": "translation"})
    step = max(1, len(data) // args.prompts)
    records, texts = data.records[::step][: args.prompts], data.texts[::step][: args.prompts]
    print(f"{len(texts)} translation prompts (every {step}th), batch {args.batch_size}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        handle = load_model(name, device="cpu")
        kept, sets, _ = token_sets(records, LANGUAGES, prefix_token_ids(handle.tokenizer), KINDS)
        prompts = [texts[i] for i in kept]
        plain(handle, prompts[:4], args.batch_size)  # warm up
        t_plain = clock(partial(plain, handle, prompts, args.batch_size))
        t_ours = clock(partial(ours, handle, prompts, sets, args.batch_size))
        t_theirs = clock(partial(theirs, handle, prompts, sets))
        n = len(prompts)
        print(f"{name} ({handle.n_layers} layers, vocabulary {handle.anatomy.unembedding.weight.shape[0]:,}), {n} prompts:")
        print(f"  plain forward {n / t_plain:7.1f} prompts/s | ours, lens on every layer {n / t_ours:7.1f} prompts/s ({t_ours / t_plain:.2f}x the plain pass)"
              f" | theirs {n / t_theirs:7.1f} prompts/s (ours {t_theirs / t_ours:.1f}x faster)")


if __name__ == "__main__":
    main()
