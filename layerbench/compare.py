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
(one-sided) by more than the tolerance and its test says the drop is real at
the one-sided level of ``z`` standard deviations (z = 2: 2.3%):

- *paired*, where both runs kept item records of the score
  (:mod:`layerbench.results.items`) on the same items: per layer, the exact
  McNemar test of the items' 1/0 outcomes (a probe's held-out correctness), else
  a seeded paired bootstrap over the items (:mod:`layerbench.paired`); the
  best-layer headline by a paired bootstrap of the best layer's score. The
  layers of one task are adjusted together (Holm), so that an unchanged model
  fails on one of 30 layers at most as often as on one.
- *unpaired* otherwise (no records, other items, a summary over queries):
  the drop must exceed ``z * sqrt(se_base^2 + se_candidate^2 + 2 * seed_sd^2)``,
  the standard errors the rows carry and the run-to-run spread measured by
  rerunning the baseline with other seeds (:func:`seed_noise`, stored beside
  the baseline as :data:`NOISE_FILE`). Unknown terms count as zero.

Every row says which test it had (``test``), its one-sided ``p`` and the smallest drop that would count (``detectable``).

Where both runs kept layer sketches of a similarity task (the quick suite's ``similarity-quick``), the report adds
each layer's similarity between base and candidate (:func:`layer_moves`): which layers a fine-tune, a merge or damage
moved. Those rows are diagnostic: they never gate.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerbench import paired
from layerbench.analysis import best_layer, main_metrics
from layerbench.errors import UserError
from layerbench.families import all_headlines
from layerbench.results.items import item_matrix, item_targets, item_units
from layerbench.results.manifest import Manifest

ROW = ["task", "protocol", "site", "subset", "split", "metric", "layer", "source_layer", "other_model"]
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
        "metric": "best:" + best.metric, "layer": pd.NA, "source_layer": pd.NA, "other_model": pd.NA, "value": best.best_value,
        "stderr": np.nan, "higher_is_better": True, "n": -1,
    })
    # The best value is the best by the metric's direction: "higher is better" holds once a lower-is-better metric is the best.
    rows["higher_is_better"] = df.drop_duplicates("metric").set_index("metric").higher_is_better.reindex(best.metric).to_numpy()
    return pd.concat([df, rows.astype({"higher_is_better": "boolean", "layer": "Int64", "source_layer": "Int64", "other_model": "string"})], ignore_index=True)


def row_kinds(rows: pd.DataFrame, mains: dict[str, str | None]) -> np.ndarray:
    """``headline``, ``main`` or ``diagnostic`` for each row of ``rows`` (columns task, metric, layer, higher_is_better), given each task's main metric."""
    # A task without a main metric (an interrupted run left only its label-free metrics) matches no metric ("\0").
    main = rows.task.map(mains).fillna("\0")
    directed = rows.higher_is_better.notna().to_numpy()
    headline_metrics = {headline.metric for headline in all_headlines()}
    best = (rows.metric == "best:" + main).to_numpy(dtype=bool)
    summary_headline = (rows.metric.isin(headline_metrics) & rows.layer.isna()).to_numpy(dtype=bool) & directed
    per_layer_main = ((rows.metric == main) & rows.layer.notna()).to_numpy(dtype=bool) & directed
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
    if "other_model" not in noise:  # measured before rows across models existed
        noise["other_model"] = pd.NA
    missing = {"model", *ROW, "seed_sd"} - set(noise.columns)
    if missing:
        raise UserError(f"seed-noise file '{path}' lacks column(s) {', '.join(sorted(missing))}; measure it again with `layerbench noise`")
    return noise.astype({"layer": "Int64", "source_layer": "Int64", "other_model": "string"})


def compare_results(base: pd.DataFrame, candidate: pd.DataFrame, tolerance: float = 0.01, z: float = 2.0, tasks: list[str] | None = None,
                    noise: pd.DataFrame | None = None, base_items: pd.DataFrame | None = None, candidate_items: pd.DataFrame | None = None,
                    seed: int = 0) -> pd.DataFrame:
    """Every shared row of ``base`` and ``candidate``, with its kind, change, noise and verdict.

    Args:
        base: result rows (``load_results``) of the base run.
        candidate: result rows of the candidate run. Matched by model on
            the models both hold (the others are left out); two sets of one
            different model each are matched across models (a new checkpoint against the old).
        tolerance: the smallest drop that counts, in the metric's own units.
        z: how many standard deviations of the difference (standard errors and seed spread) a drop must exceed.
        tasks: only these tasks.
        noise: the baseline's run-to-run spread (:func:`seed_noise`); None: standard errors only.
        base_items: the base run's item records (:func:`layerbench.results.items.load_items`); where both runs
            hold a gated score's items on the same items, its rows get a paired test. None: every row unpaired.
        candidate_items: the candidate run's item records.
        seed: the paired bootstrap's seed.

    Returns:
        Columns ``model, task, protocol, site, subset, split, metric, layer, source_layer,
        kind`` (``headline``, ``main``, ``diagnostic``; :func:`row_kinds`),
        ``base, candidate, change`` (candidate minus base), ``drop`` (the change
        against the metric's direction, positive = worse; NaN without a
        direction), ``seed_sd``, ``noise`` (the drop a row must exceed besides
        the tolerance), ``detectable`` (the smallest drop that would count:
        the larger of the tolerance and the noise) and ``verdict``: ``regression``
        or ``improvement`` (headline and main rows only), ``changed`` (a
        diagnostic row moved by more than the tolerance), or ``within-noise``;
        ``test`` (``mcnemar``, ``bootstrap`` or ``unpaired``), ``p`` (one-sided, of a drop, or of a rise for an
        improvement; Holm-adjusted over the task's layers for per-layer rows; NaN unpaired), ``items`` (how many items were paired) and ``note`` (why a
        gated row stayed unpaired).

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
    out["test"], out["p"], out["items"] = "unpaired", np.nan, pd.array([pd.NA] * len(out), dtype="Int64")
    out["note"] = pd.Series(["no item records of this score" if g else None for g in gated], index=out.index, dtype="string")
    out["higher_is_better"] = direction.to_numpy()
    out = out.reset_index(drop=True)
    if base_items is not None and candidate_items is not None:
        _pair(out, base_items, candidate_items, tolerance, paired.alpha_of(z), seed, by_model="model" in keys)
    return out.drop(columns="higher_is_better")


_ITEM_GROUP = ["task", "protocol", "site", "subset", "split", "metric"]


def _pair(report: pd.DataFrame, base_items: pd.DataFrame, candidate_items: pd.DataFrame, tolerance: float, alpha: float, seed: int, by_model: bool) -> None:
    """Give the gated rows of ``report`` whose items both runs recorded a paired test (in place: verdict, detectable, test, p, items, note)."""
    gated = report[report.kind != "diagnostic"]
    score = gated.metric.str.removeprefix("best:")
    group_keys = (["model"] if by_model else []) + _ITEM_GROUP
    base_groups = dict(list(base_items.groupby(group_keys, dropna=False))) if len(base_items) else {}
    candidate_groups = dict(list(candidate_items.groupby(group_keys, dropna=False))) if len(candidate_items) else {}
    for key, rows in gated.assign(metric=score).groupby(group_keys, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        base_part, candidate_part = base_groups.get(key), candidate_groups.get(key)
        if base_part is None or candidate_part is None:
            side = "base" if base_part is None and candidate_part is not None else "candidate" if base_part is not None else "either run"
            report.loc[rows.index, "note"] = f"no item records of this score in {side}"
            continue
        _pair_group(report, rows.index, base_part, candidate_part, tolerance, alpha, seed)


def _pair_group(report: pd.DataFrame, index: pd.Index, base_part: pd.DataFrame, candidate_part: pd.DataFrame, tolerance: float, alpha: float, seed: int) -> None:
    """The paired tests of one task's gated rows (its per-layer main rows and its best-layer headline) on its items."""
    units_b, units_c = set(item_units(base_part)), set(item_units(candidate_part))
    if units_b != units_c:
        report.loc[index, "note"] = f"items differ: {len(units_b & units_c)} shared of {len(units_b)} in base and {len(units_c)} in candidate"
        return
    statistic = str(base_part.statistic.iloc[0])
    if statistic != str(candidate_part.statistic.iloc[0]):
        report.loc[index, "note"] = f"the runs compute the score differently ({statistic} and {candidate_part.statistic.iloc[0]})"
        return
    layers = sorted(set(base_part.layer.dropna().astype(int)) & set(candidate_part.layer.dropna().astype(int)))
    if not layers:
        report.loc[index, "note"] = "the runs' item records share no layer"
        return
    units = sorted(units_b)
    target, other = item_targets(base_part, layers[0], units), item_targets(candidate_part, layers[0], units)
    if target is None or other is None or not np.allclose(target, other, equal_nan=True):  # stored records always have the column
        report.loc[index, "note"] = "the runs' items have other gold labels or scores"
        return
    vb, vc = item_matrix(base_part, layers, units), item_matrix(candidate_part, layers, units)
    if np.isnan(vb).any() or np.isnan(vc).any():
        report.loc[index, "note"] = "some layers lack records of some items"
        return
    rows = report.loc[index]
    directions = rows.higher_is_better.dropna()
    sign = -1.0 if len(directions) and not bool(directions.iloc[0]) else 1.0  # scores are turned so that higher is better
    n = len(units)
    binary = statistic == "mean" and np.isin(vb, (0.0, 1.0)).all() and np.isin(vc, (0.0, 1.0)).all()
    per_layer = rows[rows.kind == "main"]
    per_layer = per_layer[per_layer.layer.isin(layers)]
    tests = max(1, len(per_layer))
    resamples = paired.resamples_for(tests, alpha)
    weights = np.vstack([np.ones((1, n)), paired.bootstrap_weights(n, resamples, seed)])  # row 0: the items as they are
    stat_b = sign * paired.weighted_statistic(statistic, vb, target, weights)  # [1 + B, L], higher is better
    stat_c = sign * paired.weighted_statistic(statistic, vc, target, weights)
    drops = stat_b - stat_c
    position = {layer: i for i, layer in enumerate(layers)}
    if len(per_layer):
        where = [position[int(layer)] for layer in per_layer.layer]
        if binary:  # the exact test of each layer's 1/0 outcomes
            tested = [paired.mcnemar(vb[i], vc[i]) for i in where]
            p_worse, p_better = np.array([t[0] for t in tested]), np.array([t[1] for t in tested])
            reach = np.array([paired.mcnemar_detectable(n, t[2] + t[3], alpha / tests) for t in tested])
            test = "mcnemar"
        else:
            p_worse, p_better = paired.bootstrap_p(drops[1:, where])
            reach = paired.bootstrap_detectable(drops[1:, where], drops[0, where], alpha / tests)
            test = "bootstrap"
        _verdicts(report, per_layer.index, paired.holm(p_worse), paired.holm(p_better), reach, tolerance, alpha, test, n)
    best = rows[rows.kind == "headline"]
    if len(best):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a layer whose score is undefined (a constant layer's correlation) is not the best
            best_drops = np.nanmax(stat_b, axis=1) - np.nanmax(stat_c, axis=1)
        p_worse, p_better = paired.bootstrap_p(best_drops[1:])
        reach = paired.bootstrap_detectable(best_drops[1:], best_drops[0], alpha, paired.binary_floor(n, alpha) if binary else 0.0)
        _verdicts(report, best.index, np.array([p_worse]), np.array([p_better]), np.array([reach]), tolerance, alpha, "bootstrap", n)


def _verdicts(report: pd.DataFrame, index: pd.Index, p_worse: np.ndarray, p_better: np.ndarray, reach: np.ndarray, tolerance: float, alpha: float,
              test: str, n: int) -> None:
    """Paired verdicts of gated rows: a regression (improvement) moved against (with) its direction beyond the tolerance with p <= alpha."""
    drop = report.loc[index, "drop"].to_numpy(np.float64)
    report.loc[index, "verdict"] = np.select([(drop > tolerance) & (p_worse <= alpha), (-drop > tolerance) & (p_better <= alpha)],
                                             ["regression", "improvement"], default="within-noise")
    report.loc[index, "detectable"] = np.maximum(tolerance, reach)
    report.loc[index, "noise"] = reach
    # p of the direction the row moved in: of a drop, or of a rise for an improvement.
    report.loc[index, "p"] = np.where(report.loc[index, "verdict"] == "improvement", p_better, p_worse)
    report.loc[index, "test"], report.loc[index, "items"], report.loc[index, "note"] = test, n, pd.NA


MOVES = ("cka", "mutual_knn")


def layer_moves(base: list[Any], candidate: list[Any], tolerance: float) -> pd.DataFrame:
    """Each layer's similarity between the base's and the candidate's states of the same texts, as diagnostic report rows.

    Args:
        base, candidate: the two runs' stored sketches (:func:`layerbench.results.sketches.load_sketches`), matched by
            (model, task, protocol, site), or across models when each holds one model.
        tolerance: a layer counts as moved (verdict ``changed``) where a similarity is below 1 by more than this.

    Returns:
        Report rows (the columns of :func:`compare_results`): metric ``<measure>_to_base`` (``cka``: the CKA of the two
        Gram sketches, ``mutual_knn``: the mutual k-NN alignment of the two lists), ``base`` 1 (a layer against itself),
        ``candidate`` the similarity, ``change`` its distance from 1, kind ``diagnostic``; empty when no pair matches.
    """
    from layerbench.across_models import checkpoint_similarity

    key = lambda s: (s.model, s.task, s.protocol, s.site)
    if {key(s) for s in base} & {key(s) for s in candidate}:  # the models both hold
        pairs = [(b, c) for b in base for c in candidate if key(b) == key(c)]
    elif len({s.model for s in base}) == 1 == len({s.model for s in candidate}):  # one model each: a checkpoint against its base
        pairs = [(b, c) for b in base for c in candidate if key(b)[1:] == key(c)[1:]]
    else:
        pairs = []
    frames = []
    for b, c in pairs:
        if b.comparable(c) is not None:
            continue
        moved = checkpoint_similarity(b, c)
        for measure in MOVES:
            frames.append(pd.DataFrame({"model": b.model, "task": b.task, "protocol": b.protocol, "site": b.site, "subset": "all", "split": "all",
                                        "metric": f"{measure}_to_base", "layer": moved.layer, "base": 1.0, "candidate": moved[measure]}))
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    rows["change"] = rows.candidate - rows.base
    rows["kind"], rows["verdict"], rows["test"] = "diagnostic", np.where(-rows.change > tolerance, "changed", "within-noise"), "none"
    return rows.astype({"layer": "Int64"})


def format_moves(moves: pd.DataFrame, show: int = 8) -> list[str]:
    """The report's lines on which layers the candidate moved most (:func:`layer_moves`), least similar first."""
    if moves.empty:
        return []
    lines = ["", "layers moved (diagnostic, never gating): each layer's similarity to the base's same layer on the same texts (1 = unchanged)"]
    for (model, task), part in moves.groupby(["model", "task"], sort=True):
        table = part.pivot_table(index="layer", columns="metric", values="candidate").sort_values("cka_to_base")
        unchanged = bool(np.allclose(table.to_numpy(float), 1.0, atol=1e-6))
        lines.append(f"{model}, {task}: " + ("unchanged at every layer (1 to 1e-6)" if unchanged else
                     f"least similar layers first; lowest CKA {table.cka_to_base.iloc[0]:.4f} at layer {table.index[0]}, "
                     f"median {table.cka_to_base.median():.4f} over {len(table)} layers"))
        if not unchanged:
            lines.append(table.head(show).to_string(float_format=lambda v: f"{v:.4f}"))
    return lines


def gate_power(report: pd.DataFrame) -> pd.DataFrame:
    """The gate's power per task: the smallest drop of its best-layer main score (and, the median over layers, of its per-layer main score) that counts.

    Returns:
        Columns ``task, protocol, site, metric, best_layer_drop, per_layer_drop, test`` (the tests the task's
        rows had: ``mcnemar``/``bootstrap``, ``bootstrap``, or ``unpaired``), one row per (task, protocol, site).
    """
    best = report[(report.kind == "headline") & report.metric.str.startswith("best:")]
    main = report[report.kind == "main"]
    per_layer = main.groupby(["task", "protocol", "site"]).detectable.median().rename("per_layer_drop")
    tests = pd.concat([main, best]).groupby(["task", "protocol", "site"]).test.agg(lambda t: "/".join(dict.fromkeys(t))).rename("test")
    out = best.groupby(["task", "protocol", "site"]).agg(metric=("metric", "first"), best_layer_drop=("detectable", "max")).join(per_layer, how="left")
    return out.join(tests, how="left").reset_index()


def format_report(report: pd.DataFrame, tolerance: float, z: float, base_label: str = "base", candidate_label: str = "candidate", show: int = 30,
                  platforms: str | None = None, moves: pd.DataFrame | None = None) -> str:
    """The readable report: what was compared, the headline regressions first, then per-layer ones, improvements, the gate's power, and a verdict.

    ``platforms``: a line saying whether the two runs' platform fingerprints match (:func:`describe_platforms`).
    ``moves``: each layer's similarity between the runs (:func:`layer_moves`), listed after the gate's power.
    """
    gated = report[report.kind != "diagnostic"]
    counts = gated.verdict.value_counts()
    kinds = report.kind.value_counts()
    noise_known = report.seed_sd.notna().any()
    tests = gated.test.value_counts()
    unpaired = gated[gated.test == "unpaired"]
    reasons = "; ".join(f"{count} {why}" for why, count in unpaired.note.fillna("no item records").value_counts().items())
    lines = [f"base:      {base_label}", f"candidate: {candidate_label}"] + ([platforms] if platforms else []) + [
             f"gated: {kinds.get('headline', 0)} headline rows (best-layer main scores, directed headline summaries) and {kinds.get('main', 0)} "
             f"per-layer main-score rows; {kinds.get('diagnostic', 0)} diagnostic rows reported, never gating",
             f"a drop counts beyond the tolerance {tolerance:g} when its one-sided test passes at z = {z:g} (p <= {paired.alpha_of(z):.4f})",
             f"paired on the same items: {tests.get('mcnemar', 0)} rows by McNemar's exact test, {tests.get('bootstrap', 0)} by a paired bootstrap "
             "(seeded); per-layer p values Holm-adjusted over each task's layers",
             f"unpaired: {len(unpaired)} rows" + (f" ({reasons})" if len(unpaired) else "") + (
                 ", by z x sqrt(se_base^2 + se_candidate^2 + 2 seed_sd^2)" + ("" if noise_known else f" (no {NOISE_FILE} beside the base: standard errors only)")
                 if len(unpaired) else ""),
             ", ".join(f"{counts.get(v, 0)} {v}" for v in ("regression", "improvement", "within-noise")) + f"; {int((report.verdict == 'changed').sum())} diagnostic rows changed"]
    view = ["task", "protocol", "site", "subset", "metric", "layer", "base", "candidate", "change", "detectable", "test", "p"]
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
        lines += ["", "power: the smallest drop that would count, per task (best-layer main score; median over layers), and the test it had:",
                  power.to_string(**fmt)]
    lines += format_moves(moves if moves is not None else pd.DataFrame())
    lines += ["", verdict_line(report)]
    return "\n".join(lines)


def verdict_line(report: pd.DataFrame) -> str:
    """The report's last line: ``PASS: no gated row regressed (...)`` or ``FAIL: 1 headline and 3 per-layer regressions (...)``."""
    gated = report[report.kind != "diagnostic"]
    regressed = gated[gated.verdict == "regression"]
    power = gate_power(report)
    reach = f"best-layer power {power.best_layer_drop.max():.3f} at worst" if not power.empty and power.best_layer_drop.notna().any() else "no best-layer rows"
    if regressed.empty:
        return f"PASS: no gated row regressed ({int((gated.verdict == 'within-noise').sum())} within noise, {int((gated.verdict == 'improvement').sum())} improved; {reach})"
    headline, per_layer = int((regressed.kind == "headline").sum()), int((regressed.kind == "main").sum())
    return f"FAIL: {headline} headline and {per_layer} per-layer regressions ({reach})"


def describe_platforms(base: list[Manifest], candidate: list[Manifest]) -> str:
    """One line on whether the two result sets ran on the same platform, from their manifests' platform fingerprints
    (:func:`layerbench.environment.platform_fingerprint`): on one platform an unchanged model reproduces bit for bit; across
    platforms float32 kernels move the last bits, and a threshold score by an item or so."""
    from layerbench.environment import describe_platform

    def fingerprints(manifests: list[Manifest]) -> dict[str, dict[str, Any] | None]:
        found: dict[str, dict[str, Any] | None] = {}
        for manifest in manifests:
            fingerprint = manifest.environment.platform_fingerprint
            found[manifest.platform_id or "unknown"] = fingerprint
        return found

    left, right = fingerprints(base), fingerprints(candidate)
    if not left or not right:
        return "platform: not recorded (no run manifests beside the rows)"
    if set(left) == set(right) and "unknown" not in left and len(left) == 1:
        return f"platform: both on {describe_platform(next(iter(left.values())))}: an unchanged model reproduces bit for bit"
    describe = lambda found: "; ".join(describe_platform(f) for f in found.values())
    return (f"platforms differ: base on {describe(left)}, candidate on {describe(right)}: float32 kernels differ in the last bits "
            "there, so an unchanged model's scores move slightly (within the tolerance), not bit for bit")
