"""The regression gate: does a candidate's result set fall below a baseline's anywhere it counts?

Two result sets are compared on every shared (task, protocol, site, subset,
split, metric, layer, source_layer) row whose metric has a direction, and on each task's
best-layer score (:func:`layerbench.analysis.best_layer`). A row regresses
when its value moved against its direction (one-sided) by more than both the
tolerance and ``z`` times the combined standard error
``sqrt(stderr_base^2 + stderr_candidate^2)`` where both are known. Rows with
no direction (concept depth, descriptive metrics) are listed as changes and
never gate.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from layerbench.analysis import best_layer
from layerbench.errors import UserError

ROW = ["task", "protocol", "site", "subset", "split", "metric", "layer", "source_layer"]


def _with_best_layers(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus one row per task and main metric: its best-layer score, as metric ``best:<metric>``, a summary row (null layer)."""
    best = best_layer(df)
    if best.empty:
        return df
    rows = pd.DataFrame({
        "model": best.model, "revision": best.revision, "task": best.task, "protocol": best.protocol, "site": best.site,
        "subset": best.subset, "split": best.split,
        "metric": "best:" + best.metric, "layer": pd.NA, "source_layer": pd.NA, "value": best.best_value,
        "stderr": np.nan, "higher_is_better": True, "n": -1,
    })
    return pd.concat([df, rows.astype({"higher_is_better": "boolean", "layer": "Int64", "source_layer": "Int64"})], ignore_index=True)


def compare_results(base: pd.DataFrame, candidate: pd.DataFrame, tolerance: float = 0.01, z: float = 1.0, tasks: list[str] | None = None) -> pd.DataFrame:
    """Every shared row of ``base`` and ``candidate``, with its change and verdict.

    Args:
        base, candidate: result rows (``load_results``). Matched by model as
            well when both hold the same models; a set of one model each is
            matched across models (a new checkpoint against the old one).
        tolerance: the smallest drop that counts, in the metric's own units.
        z: how many combined standard errors a drop must exceed.
        tasks: only these tasks.

    Returns:
        Columns ``model, task, protocol, site, subset, split, metric, layer, source_layer,
        base, candidate, change`` (candidate minus base), ``drop`` (the change
        against the metric's direction, positive = worse; NaN without a
        direction), ``noise`` (z times the combined standard error) and
        ``verdict``: ``regression``, ``improvement``, ``within-noise``, or
        ``changed`` (no direction, moved by more than the tolerance).

    Raises:
        UserError: the model sets cannot be matched, or nothing is shared.
    """
    if tasks:
        base, candidate = base[base.task.isin(tasks)], candidate[candidate.task.isin(tasks)]
    base_models, candidate_models = set(base.model), set(candidate.model)
    if base_models == candidate_models:
        keys = ["model", *ROW]
    elif len(base_models) == 1 and len(candidate_models) == 1:
        keys = ROW
    else:
        raise UserError(f"cannot match models: base has {sorted(base_models)}, candidate {sorted(candidate_models)}; give one model each, or the same models")
    columns = [*keys, "value", "stderr", "higher_is_better"]
    left = _with_best_layers(base)[columns + (["model"] if "model" not in keys else [])]
    right = _with_best_layers(candidate)[columns]
    merged = left.merge(right, on=keys, suffixes=("_base", "_candidate"))
    if merged.empty:
        raise UserError("the two result sets share no (task, metric, layer) row" + (f" in tasks {tasks}" if tasks else ""))
    direction = merged.higher_is_better_base.astype("boolean")
    change = merged.value_candidate - merged.value_base
    sign = np.where(direction.isna(), np.nan, np.where(direction.fillna(True), 1.0, -1.0))
    drop = -sign * change
    noise = z * np.sqrt(merged.stderr_base**2 + merged.stderr_candidate**2)  # NaN where either is unknown
    beyond_noise = drop > noise.fillna(0.0)
    undirected = direction.isna().to_numpy()
    verdict = np.select(
        [undirected & (change.abs() > tolerance).to_numpy(), undirected,
         ((drop > tolerance) & beyond_noise).to_numpy(), ((-drop > tolerance) & (-drop > noise.fillna(0.0))).to_numpy()],
        ["changed", "within-noise", "regression", "improvement"], default="within-noise")
    out = merged[[*(["model"] if "model" in merged else []), *ROW]].copy()
    out["base"], out["candidate"], out["change"] = merged.value_base, merged.value_candidate, change
    out["drop"], out["noise"], out["verdict"] = drop, noise, verdict
    return out.reset_index(drop=True)


def format_report(report: pd.DataFrame, tolerance: float, z: float, show: int = 30) -> str:
    """The readable table: counts per verdict, then the worst regressions and the largest improvements."""
    counts = report.verdict.value_counts()
    lines = [f"{len(report)} shared rows; tolerance {tolerance:g}, noise = {z:g} x combined stderr: "
             + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("regression", "improvement", "within-noise", "changed"))]
    view = ["task", "protocol", "site", "subset", "metric", "layer", "base", "candidate", "change", "noise"]
    for verdict, ascending in (("regression", False), ("improvement", True)):
        part = report[report.verdict == verdict].sort_values("drop", ascending=ascending).head(show)
        if not part.empty:
            lines += ["", f"{verdict}s ({counts[verdict]}, {'worst' if verdict == 'regression' else 'largest'} first):",
                      part[view].to_string(index=False, float_format=lambda v: f"{v:.4f}")]
    return "\n".join(lines)
