"""Internal consistency, where its time goes and the code before against ours, side by side in one run.

Both protocols' evaluators run twice on the same questions: with the generation before (Hugging Face's ``generate``
after a shared prefill: every row computed until the batch's last row stops, a ``DynamicCache`` that copies
itself at every step) and with ours (:func:`layerbench.models.generation.decode_rows`: a row leaves the batch
when it stops, a cache that grows in place). The profile prints, per stage (sampled paths, greedy paths, lens
readout, scores), the seconds, the model's forward calls, the token positions computed and the share of those
that carry a token a row still needed (the rest is padding after a row stopped). The paths must be identical
text for text and the rows identical value for value (``xie2024``'s IC AUROC included).

Run: ``python benchmarks/bench_consistency.py [--model smollm2-135m-q4] [--questions 17] [--protocol layerbench,xie2024]``
(17: the leaderboard's ``--limit 20`` less the 3 worked examples).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import time
from collections.abc import Iterator

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import torch
from common import generate_before

from layerbench import load_model
from layerbench.data import load_task_data
from layerbench.evaluators import consistency
from layerbench.families import EvaluatorContext
from layerbench.models import generation
from layerbench.specs import get_task
from layerbench.specs.protocols import get_protocol


class Profile:
    """Seconds, forward calls and token positions (rows x tokens of each call's input) per stage."""

    def __init__(self, handle) -> None:
        self.handle, self.stage = handle, "other"
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.positions: dict[str, int] = {}

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        model = self.handle.model
        forward = model.forward

        @functools.wraps(forward)  # generate reads the forward's signature (logits_to_keep): keep it
        def counted(*args, **kwargs):
            ids = kwargs.get("input_ids")
            if ids is not None:
                self.calls[self.stage] = self.calls.get(self.stage, 0) + 1
                self.positions[self.stage] = self.positions.get(self.stage, 0) + ids.shape[0] * ids.shape[1]
            return forward(*args, **kwargs)

        model.forward = counted
        try:
            yield
        finally:
            del model.forward

    def timed(self, stage: str, function):
        def run(*args, **kwargs):
            before, self.stage = self.stage, stage
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - began
                self.stage = before
        return run


def run_evaluator(handle, spec, data, generate_function, seed: int) -> tuple[pd.DataFrame, Profile, float, list]:
    """One evaluator run with ``generate_function`` for every generation; the rows, the profile, the seconds and the paths."""
    profile = Profile(handle)
    paths: list = []

    def recorded_generate(*args, **kwargs):
        result = generate_function(*args, **kwargs)
        paths.append(result)
        return result

    stage_of = lambda kwargs: "sampled paths" if kwargs.get("sample") else "greedy paths"
    patched = {"generate": lambda *a, **k: profile.timed(stage_of(k), recorded_generate)(*a, **k),
               "continuation_states": profile.timed("lens readout", consistency.continuation_states)}
    saved = {name: getattr(consistency, name) for name in patched}
    evaluate = consistency.evaluate_xie2024 if spec.settings.protocol == "xie2024" else consistency.evaluate_consistency
    try:
        for name, function in patched.items():
            setattr(consistency, name, function)
        with profile.counting():
            began = time.perf_counter()
            rows = evaluate(EvaluatorContext(data, spec, seed, handle=handle))
            seconds = time.perf_counter() - began
    finally:
        for name, function in saved.items():
            setattr(consistency, name, function)
    profile.seconds["scores and rest"] = seconds - sum(profile.seconds.values())
    return rows, profile, seconds, paths


def print_profile(label: str, profile: Profile, seconds: float, live_positions: dict[str, int]) -> None:
    print(f"  {label}: {seconds:7.1f} s")
    for stage, spent in profile.seconds.items():
        computed = profile.positions.get(stage, 0)
        useful = live_positions.get(stage)
        share = f", {useful / computed:5.1%} of them a token still needed" if useful and computed else ""
        print(f"    {stage:16s} {spent:7.1f} s  {profile.calls.get(stage, 0):6d} forward calls  {computed:9,d} token positions{share}")


def needed_positions(handle, spec, data, paths: list) -> dict[str, int]:
    """Token positions that carry something a row needed: each prompt once, then each path's own tokens (after the first)."""
    tok = handle.tokenizer
    prompt_tokens = {}
    needed: dict[str, int] = {}
    protocol = spec.settings.protocol
    _, _, prompts = (consistency.xie2024_prompts if protocol == "xie2024" else consistency.question_prompts)(data, spec.settings, spec.name)
    for q, prompt in enumerate(prompts):
        prompt_tokens[q] = len(tok(prompt)["input_ids"])
    for result in paths:
        stage = "sampled paths" if len(result[0]) > 1 else "greedy paths"
        for q, texts in enumerate(result):
            needed[stage] = needed.get(stage, 0) + prompt_tokens[q] + sum(max(len(tok(t, add_special_tokens=False)["input_ids"]) - 1, 0) for t in texts)
    return needed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-q4")
    parser.add_argument("--questions", type=int, default=17)
    parser.add_argument("--protocol", default="layerbench,xie2024")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    handle = load_model(args.model, device="cpu")
    base = get_task("consistency-coinflip")
    data = load_task_data(base, limit=args.questions + base.settings.shots)
    for protocol in args.protocol.split(","):
        spec = base if protocol == "layerbench" else base.under(protocol, get_protocol(protocol).settings)
        print(f"{args.model}, {spec.name} under {protocol}: {args.questions} questions, {spec.settings.seeds} x {spec.settings.paths} paths of up to "
              f"{spec.settings.max_new_tokens} tokens (CPU, {torch.get_num_threads()} threads)")
        before_rows, before, before_seconds, before_paths = run_evaluator(handle, spec, data, generate_before, args.seed)
        ours_rows, ours, ours_seconds, ours_paths = run_evaluator(handle, spec, data, generation.generate, args.seed)
        needed = needed_positions(handle, spec, data, ours_paths)
        print_profile("before", before, before_seconds, needed)
        print_profile("ours  ", ours, ours_seconds, needed)
        same_paths = sum(a == b for x, y in zip(before_paths, ours_paths) for a, b in zip(x, y))
        total = sum(len(x) for x in before_paths)
        values = lambda rows: rows.sort_values(["metric", "subset", "layer"], na_position="first")["value"].to_numpy()
        same_rows = np.array_equal(values(before_rows), values(ours_rows), equal_nan=True)
        auroc = lambda rows: float(rows.loc[rows["metric"] == "ic_auroc", "value"].iloc[0])
        print(f"  before / ours: {before_seconds / ours_seconds:.2f}x; identical paths {same_paths} of {total} prompts' sets; "
              f"rows identical: {same_rows}; IC AUROC {auroc(before_rows):.6f} before, {auroc(ours_rows):.6f} ours")


if __name__ == "__main__":
    main()
