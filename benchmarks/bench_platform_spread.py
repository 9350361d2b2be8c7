"""How far the same rows move between two machines: two result folders of the same models, code, packages and config,
made on different CPUs (their manifests' platform fingerprints say which), compared row by row.

Rows are grouped by kind: the gated scores (each task's main score per layer), the other scores (diagnostics with a
direction), the label-free metrics (relative change), the concept-depth positions (a layer or a depth), and the
descriptive rows.
The README's "Numbers across machines" and the tests' cross-platform tolerance (tests/test_docs.py) come from it.

Run: ``python benchmarks/bench_platform_spread.py results demo-results`` (``make demo`` made on another machine).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from layerbench.analysis import main_metrics
from layerbench.environment import describe_platform
from layerbench.metrics import list_metrics
from layerbench.results import load_results, read_manifests

KEY = ["model", "task", "protocol", "site", "subset", "split", "metric", "layer", "source_layer"]


def kind_of(rows: pd.DataFrame, mains: dict[str, str | None]) -> np.ndarray:
    """Per row: ``gated score`` (the task's main score at a layer: what the gate tests), ``other score`` (a direction, a
    diagnostic), ``label-free metric``, ``depth position`` (a concept depth's layer or depth) or ``descriptive``."""
    label_free = {info.name for info in list_metrics()}
    metric = rows.metric.astype(str)
    gated = (metric == rows.task.map(mains)).to_numpy() & rows.layer.notna().to_numpy()
    return np.select([gated, metric.isin(label_free).to_numpy(), metric.str.endswith(("_layer", "_depth")).to_numpy(), rows.higher_is_better_a.notna().to_numpy()],
                     ["gated score", "label-free metric", "depth position", "other score"], "descriptive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    args = parser.parse_args()
    for folder in (args.first, args.second):
        platforms = {describe_platform(m.environment.platform_fingerprint) for runs in read_manifests([Path(folder)]).values() for m in runs}
        print(f"{folder}: {'; '.join(sorted(platforms))}")
    a, b = load_results(args.first), load_results(args.second)
    both = a.merge(b, on=KEY, suffixes=("_a", "_b"))
    same_nan = both.value_a.isna() & both.value_b.isna()
    both = both[~same_nan].assign(change=lambda f: (f.value_a - f.value_b).abs())
    both["relative"] = both.change / np.maximum(both.value_a.abs(), 1e-12)
    both["kind"] = kind_of(both, main_metrics(a))
    print(f"{len(both)} shared rows with a value; {int((both.change == 0).sum())} equal bit for bit; "
          f"{int((both.value_a.isna() != both.value_b.isna()).sum())} where one side is NaN")
    table = both.groupby(["kind", "metric"]).agg(rows=("change", "size"), moved=("change", lambda c: int((c > 0).sum())),
                                                 largest=("change", "max"), largest_relative=("relative", "max"))
    with pd.option_context("display.max_rows", 400, "display.width", 200):
        print(table[table.moved > 0].sort_values(["kind", "largest"], ascending=[True, False]).to_string(float_format=lambda v: f"{v:.2e}"))
        print(both.groupby("kind").agg(rows=("change", "size"), moved=("change", lambda c: int((c > 0).sum())), largest=("change", "max"),
                                       largest_relative=("relative", "max")).to_string(float_format=lambda v: f"{v:.2e}"))


if __name__ == "__main__":
    main()
