"""The regression gate: does a candidate's result set fall below a baseline's on the numbers that are meant to gate?

Two result sets are compared on every shared (task, protocol, site, subset,
split, metric, layer, source_layer) row and on each task's best-layer score
(:func:`layerbench.analysis.best_layer`, metric ``best:<main score>``). Each
row is of one kind:

- ``headline``: a task's best-layer main score, and the families' headline
  summaries that have a direction (the back-patching fix rate, IC AUROC);
- ``main``: the task's main score at one layer;
- ``diagnostic``: everything else (another evaluator score such as recall at
  one threshold, label-free metrics, descriptive rows). Reported, never gating.

A headline or main row regresses when it moved against its direction
(one-sided) by more than the tolerance and by more than its noise,
``z * sqrt(se_base^2 + se_candidate^2 + 2 * seed_sd^2)``: the standard errors
the rows carry and the run-to-run spread measured by rerunning the baseline
with other seeds (:func:`seed_noise`, stored beside the baseline as
:data:`NOISE_FILE`). Unknown terms count as zero.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from layerbench.analysis import HEADLINE_SUMMARIES, best_layer, main_metrics
from layerbench.errors import UserError

ROW = ["task", "protocol", "site", "subset", "split", "metric", "layer", "source_layer"]
# The run-to-run spread of every row, measured over seeds, kept in the baseline's folder (not a parquet: it is not result rows).
NOISE_FILE = "seed-noise.csv"
KINDS = ("headline", "main", "diagnostic")


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
    # The best value is the best by the metric's direction: "higher is better" holds once a lower-is-better metric is the best.
    rows["higher_is_better"] = df.drop_duplicates("metric").set_index("metric").higher_is_better.reindex(best.metric).to_numpy()
    return pd.concat([df, rows.astype({"higher_is_better": "boolean", "layer": "Int64", "source_layer": "Int64"})], ignore_index=True)


def row_kinds(rows: pd.DataFrame, mains: dict[str, str | None]) -> np.ndarray:
    """``headline``, ``main`` or ``diagnostic`` for each row of ``rows`` (columns task, metric, layer, higher_is_better), given each task's main metric."""
    main = rows.task.map(mains)
    directed = rows.higher_is_better.notna().to_numpy()
    headline_metrics = {metric for metric, _ in HEADLINE_SUMMARIES}
    best = (rows.metric == "best:" + main.fillna("\0")).to_numpy()
    summary_headline = (rows.metric.isin(headline_metrics) & rows.layer.isna()).to_numpy() & directed
    per_layer_main = ((rows.metric == main) & rows.layer.notna()).to_numpy() & directed
    return np.select([best | summary_headline, per_layer_main], ["headline", "main"], default="diagnostic")


def seed_noise(runs: list[pd.DataFrame]) -> pd.DataFrame:
    """The run-to-run spread of every row over runs of the same models and tasks that differ only in ``--seed``.

    Args:
        runs: result rows (``load_results``) of two or more runs, the baseline first.

    Returns:
        Columns ``model, task, protocol, site, subset, split, metric, layer,
        source_layer, seed_sd`` (the sample standard deviation of the value,
        ddof=1, including the best-layer rows) and ``seeds`` (how many runs
        hold the row; rows in fewer than two are left out).
    """
    if len(runs) < 2:
        raise UserError("measuring seed noise needs the baseline and at least one rerun with another --seed")
    keys = ["model", *ROW]
    stacked = pd.concat([_with_best_layers(run)[[*keys, "value"]] for run in runs], ignore_index=True)
    spread = stacked.groupby(keys, dropna=False).value.agg(seed_sd="std", seeds="count").reset_index()
    return spread[spread.seeds >= 2].reset_index(drop=True)


def read_seed_noise(folder: str | Path) -> pd.DataFrame | None:
    """The seed noise stored beside the results in ``folder`` (:data:`NOISE_FILE`), or None when it has none."""
    path = Path(folder) / NOISE_FILE
    if not path.is_file():
        return None
    try:
        noise = pd.read_csv(path, dtype={"revision": "string"})
    except (OSError, ValueError) as exc:
        raise UserError(f"corrupt seed-noise file '{path}' ({str(exc).splitlines()[0]}); measure it again with `layerbench noise`") from None
    missing = {"model", *ROW, "seed_sd"} - set(noise.columns)
    if missing:
        raise UserError(f"seed-noise file '{path}' lacks column(s) {', '.join(sorted(missing))}; measure it again with `layerbench noise`")
    return noise.astype({"layer": "Int64", "source_layer": "Int64"})


def compare_results(base: pd.DataFrame, candidate: pd.DataFrame, tolerance: float = 0.01, z: float = 2.0, tasks: list[str] | None = None,
                    noise: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every shared row of ``base`` and ``candidate``, with its kind, change, noise and verdict.

    Args:
        base, candidate: result rows (``load_results``). Matched by model on
            the models both hold (the others are left out); two sets of one
            different model each are matched across models (a new checkpoint against the old).
        tolerance: the smallest drop that counts, in the metric's own units.
        z: how many standard deviations of the difference (standard errors and seed spread) a drop must exceed.
        tasks: only these tasks.
        noise: the baseline's run-to-run spread (:func:`seed_noise`); None: standard errors only.

    Returns:
        Columns ``model, task, protocol, site, subset, split, metric, layer, source_layer,
        kind`` (``headline``, ``main``, ``diagnostic``; :func:`row_kinds`),
        ``base, candidate, change`` (candidate minus base), ``drop`` (the change
        against the metric's direction, positive = worse; NaN without a
        direction), ``seed_sd``, ``noise`` (the drop a row must exceed besides
        the tolerance), ``detectable`` (the smallest drop that would count:
        the larger of the tolerance and the noise) and ``verdict``: ``regression``
        or ``improvement`` (headline and main rows only), ``changed`` (a
        diagnostic row moved by more than the tolerance), or ``within-noise``.

    Raises:
        UserError: the model sets cannot be matched, or nothing is shared.
    """
    if tasks:
        base, candidate = base[base.task.isin(tasks)], candidate[candidate.task.isin(tasks)]
    base_models, candidate_models = set(base.model), set(candidate.model)
    if base_models & candidate_models:  # the models both hold (`compare results demo-results`: the demo's two of the four)
        shared = base_models & candidate_models
        base, candidate = base[base.model.isin(shared)], candidate[candidate.model.isin(shared)]
        keys = ["model", *ROW]
    elif len(base_models) == 1 and len(candidate_models) == 1:
        keys = ROW
    else:
        raise UserError(f"cannot match models: base has {sorted(base_models)}, candidate {sorted(candidate_models)}; give one model each, or sets that share models")
    mains = main_metrics(base)
    columns = [*keys, "value", "stderr", "higher_is_better"]
    left = _with_best_layers(base)[columns + (["model"] if "model" not in keys else [])]
    right = _with_best_layers(candidate)[columns]
    merged = left.merge(right, on=keys, suffixes=("_base", "_candidate"))
    if merged.empty:
        raise UserError("the two result sets share no (task, metric, layer) row" + (f" in tasks {tasks}" if tasks else ""))
    if noise is not None and not noise.empty:
        merged = merged.merge(noise[["model", *ROW, "seed_sd"]], on=["model", *ROW], how="left")
    else:
        merged["seed_sd"] = np.nan
    direction = merged.higher_is_better_base.astype("boolean")
    kind = row_kinds(merged.rename(columns={"higher_is_better_base": "higher_is_better"}), mains)
    change = merged.value_candidate - merged.value_base
    sign = np.where(direction.isna(), np.nan, np.where(direction.fillna(True), 1.0, -1.0))
    drop = -sign * change
    variance = merged.stderr_base.fillna(0.0) ** 2 + merged.stderr_candidate.fillna(0.0) ** 2 + 2 * merged.seed_sd.fillna(0.0) ** 2
    noise_level = z * np.sqrt(variance)
    detectable = np.maximum(tolerance, noise_level)
    gated = kind != "diagnostic"
    verdict = np.select(
        [gated & (drop > detectable).to_numpy(), gated & (-drop > detectable).to_numpy(), ~gated & (change.abs() > tolerance).to_numpy()],
        ["regression", "improvement", "changed"], default="within-noise")
    out = merged[[*(["model"] if "model" in merged else []), *ROW]].copy()
    out["kind"] = kind
    out["base"], out["candidate"], out["change"] = merged.value_base, merged.value_candidate, change
    out["drop"], out["seed_sd"], out["noise"], out["detectable"], out["verdict"] = drop, merged.seed_sd, noise_level, detectable, verdict
    return out.reset_index(drop=True)


def gate_power(report: pd.DataFrame) -> pd.DataFrame:
    """The gate's power per task: the smallest drop of its best-layer main score (and, the median over layers, of its per-layer main score) that counts.

    Returns:
        Columns ``task, protocol, site, metric, best_layer_drop, per_layer_drop``, one row per (task, protocol, site).
    """
    best = report[(report.kind == "headline") & report.metric.str.startswith("best:")]
    per_layer = report[report.kind == "main"].groupby(["task", "protocol", "site"]).detectable.median().rename("per_layer_drop")
    out = best.groupby(["task", "protocol", "site"]).agg(metric=("metric", "first"), best_layer_drop=("detectable", "max")).join(per_layer, how="left")
    return out.reset_index()


def format_report(report: pd.DataFrame, tolerance: float, z: float, base_label: str = "base", candidate_label: str = "candidate", show: int = 30) -> str:
    """The readable report: what was compared, the headline regressions first, then per-layer ones, improvements, and the gate's power."""
    gated = report[report.kind != "diagnostic"]
    counts = gated.verdict.value_counts()
    kinds = report.kind.value_counts()
    noise_known = report.seed_sd.notna().any()
    lines = [f"base:      {base_label}", f"candidate: {candidate_label}",
             f"gated: {kinds.get('headline', 0)} headline rows (best-layer main scores, directed headline summaries) and {kinds.get('main', 0)} "
             f"per-layer main-score rows; {kinds.get('diagnostic', 0)} diagnostic rows reported, never gating",
             f"a drop counts beyond the tolerance {tolerance:g} and {z:g} x sqrt(se_base^2 + se_candidate^2 + 2 seed_sd^2)"
             + ("" if noise_known else f" (no {NOISE_FILE} beside the base: standard errors only)"),
             ", ".join(f"{counts.get(v, 0)} {v}" for v in ("regression", "improvement", "within-noise")) + f"; {int((report.verdict == 'changed').sum())} diagnostic rows changed"]
    view = ["task", "protocol", "site", "subset", "metric", "layer", "base", "candidate", "change", "detectable"]
    if "model" in report and report.model.nunique() > 1:
        view = ["model", *view]
    fmt = {"float_format": lambda v: f"{v:.4f}", "index": False}
    for kind, title in (("headline", "HEADLINE regressions"), ("main", "per-layer main-score regressions")):
        part = report[(report.kind == kind) & (report.verdict == "regression")].sort_values("drop", ascending=False)
        if not part.empty:
            lines += ["", f"{title} ({len(part)}, worst first):", part.head(show)[view].to_string(**fmt)]
    part = gated[gated.verdict == "improvement"].sort_values("drop")
    if not part.empty:
        lines += ["", f"improvements ({len(part)}, largest first):", part.head(show)[view].to_string(**fmt)]
    power = gate_power(report)
    if not power.empty:
        lines += ["", "power: the smallest drop that would count, per task (best-layer main score; median over layers):",
                  power.to_string(**fmt)]
    return "\n".join(lines)
