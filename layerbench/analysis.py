"""pandas helpers for result rows (:func:`layerbench.load_results`): the analysis every reader of results does.

Rows with a ``layer`` read one layer; rows whose ``layer`` is null (<NA>) summarize a
task over layers (concept depth, back-patching fix rate, IC AUROC). Patched
rows (``source_layer`` set) are heat-map cells, not layer curves, and are
left out of curves and best layers. A task measured under several protocols
or capture sites is kept apart by the ``protocol`` and ``site`` columns.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import pandas as pd

from layerbench.errors import UserError
from layerbench.families import all_headlines

GROUP = ["model", "revision", "task", "protocol", "site", "subset", "split", "metric"]
# What one task's ranking is per: a model run of a task under one protocol at one site.
TASK_KEY = ["model", "revision", "task", "protocol", "site"]
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def normal_interval(value: np.ndarray, stderr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95% interval ``value -+ 1.96 stderr`` of each value (NaN where the stderr is), arrays of one shape."""
    value, stderr = np.asarray(value, float), np.asarray(stderr, float)
    return value - Z95 * stderr, value + Z95 * stderr


def wilson_interval(share: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's 95% score interval of a share ``p = k / n`` of n items (NaN where n is 0).

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``: unlike p -+ z sqrt(p(1-p)/n) it stays inside
    [0, 1] and does not shrink to a point at p = 0 or 1, which matters on the few dozen items a fix rate rests on.
    """
    p, n = np.asarray(share, float), np.asarray(n, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
        half = Z95 * np.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2)) / (1 + Z95**2 / n)
    centre, half = np.where(n > 0, centre, np.nan), np.where(n > 0, half, np.nan)
    return centre - half, centre + half


def _registered_main_scores() -> dict[str, str]:
    """Each installed task's main score, from the task folders as they are now ($LAYERBENCH_TASKS may change between calls)."""
    from layerbench.specs.registry import task_dirs

    return _main_scores_in(tuple(task_dirs()))


@lru_cache(maxsize=8)
def _main_scores_in(folders: tuple) -> dict[str, str]:
    from layerbench.specs import all_tasks

    # A malformed spec in $LAYERBENCH_TASKS is left out of all_tasks() (it blocks only itself), so it never stops the reading of results.
    return {name: spec.main_score for name, spec in all_tasks().items()}


def main_metric(df: pd.DataFrame, task: str) -> str | None:
    """The metric a task is ranked by: its spec's ``main_score`` when it is in the rows, else mteb's ``main_score``, else None.

    ``task`` may carry a variant suffix (``concept-capitals@<protocol>``, as the leaderboard names variants).
    """
    return main_metrics(df[df.task == task]).get(task)


def main_metrics(df: pd.DataFrame, declared: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """:func:`main_metric` of every task in ``df``, in one pass over the rows.

    ``declared`` (task -> its spec's main score, as run manifests record it)
    replaces the registered specs: the leaderboard reads it from the result
    folders, so it does not depend on the task specs of the machine it runs on.
    """
    from layerbench.specs.protocols import base_task

    wanted = dict(declared) if declared is not None else _registered_main_scores()
    out: dict[str, str | None] = {}
    for task, metrics in df.groupby("task", sort=False).metric.unique().items():
        present = set(metrics)
        out[task] = next((c for c in (wanted.get(task, wanted.get(base_task(task))), "main_score") if c in present), None)
    return out


def layer_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that read one layer: a ``layer`` and no ``source_layer`` (not summaries, not heat-map cells)."""
    return df[df.layer.notna() & df.source_layer.isna()]


def layer_curve(df: pd.DataFrame, task: str, metric: str, *, model: str | None = None, subset: str | None = None, split: str | None = None,
                protocol: str | None = None) -> pd.DataFrame:
    """One metric of one task against depth: columns ``model, revision, subset, split, layer, depth, value, stderr``, sorted.

    Raises:
        UserError: no per-layer rows match (the message names what there is).
    """
    rows = layer_rows(df)
    rows = rows[(rows.task == task) & (rows.metric == metric)]
    for column, wanted in (("model", model), ("subset", subset), ("split", split), ("protocol", protocol)):
        if wanted is not None:
            rows = rows[rows[column] == wanted]
    if rows.empty:
        known = sorted(set(layer_rows(df).loc[lambda r: r.task == task, "metric"]))
        raise UserError(f"no per-layer rows of metric '{metric}' in task '{task}'" + (f"; its metrics: {', '.join(known)}" if known else "; no such task in the rows"))
    columns = ["model", "revision", "subset", "split", "layer", "depth", "value", "stderr"]
    return rows[columns].sort_values(["model", "subset", "split", "layer"]).reset_index(drop=True)


def best_layer(df: pd.DataFrame, task: str | None = None, metric: str | None = None, mains: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """The best layer of every (model, revision, task, protocol, site, subset, split, metric), by the metric's direction.

    Args:
        df: result rows.
        task: only this task (default: all).
        metric: only this metric (default: each task's main metric, :func:`main_metric`).
        mains: task -> main metric (:func:`main_metrics`), when the caller has them.

    Returns:
        One row per group: the group's columns plus ``best_layer``, ``best_depth``,
        ``best_value``, ``last_layer``, ``last_value`` and ``gain`` (best minus
        last, signed so that positive is better), ``n_layers``. Metrics with no
        direction (descriptive ones) are left out.
    """
    rows = layer_rows(df)
    rows = rows[rows.higher_is_better.notna()]
    if task is not None:
        rows = rows[rows.task == task]
    if metric is not None:
        rows = rows[rows.metric == metric]
    else:
        mains = mains if mains is not None else main_metrics(df)
        rows = rows[rows.metric == rows.task.map(mains)]
    out = []
    for key, group in rows.groupby(GROUP, dropna=False, sort=True):
        if group.value.isna().all():  # no layer has a value (a subset left without items): no best layer
            continue
        higher = bool(group.higher_is_better.iloc[0])
        best = group.loc[group.value.idxmax() if higher else group.value.idxmin()]
        last = group.loc[group.layer.idxmax()]
        sign = 1.0 if higher else -1.0
        out.append(dict(zip(GROUP, key)) | dict(
            best_layer=int(best.layer), best_depth=float(best.depth), best_value=float(best.value),
            last_layer=int(last.layer), last_value=float(last.value), gain=sign * float(best.value - last.value), n_layers=int(best.n_layers),
            best_stderr=float(best.stderr), last_stderr=float(last.stderr)))
    return pd.DataFrame(out, columns=[*GROUP, "best_layer", "best_depth", "best_value", "last_layer", "last_value", "gain", "n_layers",
                                      "best_stderr", "last_stderr"])


def summary(df: pd.DataFrame, mains: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """One row per (model, revision, task, protocol, site): its main metric's best and last layer, plus the task's headline summaries.

    Columns: ``model, revision, task, protocol, site, metric, best_layer, best_depth,
    best_value, last_value, gain`` (NaN when the main metric has no per-layer
    rows) and ``concept_depth`` (converging depth of a probe task),
    ``oracle_fix_rate`` (back-patching, first position in name order),
    ``ic_auroc`` (internal consistency), each NaN where the task has none,
    and each with its ``<column>_n`` (the items it rests on); ``best_value``,
    ``last_value``, ``gain`` and each headline with its 95% interval,
    ``<column>_low`` and ``<column>_high`` (:func:`normal_interval` from the
    rows' stderr, or :func:`wilson_interval` for a share such as the fix rate;
    NaN where the rows have no stderr). ``best_value`` and ``gain`` are the naive
    maximum, the layer chosen and scored on the same items (biased upward: the
    winner's curse); beside them the selection-honest best (:mod:`layerbench.honest_best`:
    the layer chosen on half the items and scored on the other half, over many
    halvings), read from the ``honest_*`` rows: ``honest_best_value``,
    ``honest_best_layer`` (picked most often), ``honest_best_depth``,
    ``honest_gain`` (over the last layer, on the same held-out halves), the
    value's and the gain's 95% intervals, ``honest_best_value_n`` (its items; 0
    where the task has a naive best but no item records) and ``honest_note``
    (why there is none). ``note`` says
    why a headline is missing (a probe task whose best layer does not beat
    its baselines has no concept depth; a fix rate on fewer than 20 wrong
    queries is withheld), else null.
    """
    mains = mains if mains is not None else main_metrics(df)
    best = best_layer(df, mains=mains)
    # A task whose main metric has several subsets (robustness variants) is ranked on the first in name order.
    best = best.sort_values([*TASK_KEY, "subset", "split"]).drop_duplicates(TASK_KEY)
    keys = df[TASK_KEY].drop_duplicates()
    out = keys.merge(best.drop(columns=["subset", "split"]), on=TASK_KEY, how="left")
    # 95% intervals of the best and last layer's score from their rows' stderr; the gain's treats the two as independent,
    # which overstates its width (both layers are scored on the same items), so a gain whose interval excludes 0 is real.
    # Where the best layer is the last, the gain is a layer against itself: 0, with no spread.
    best_se, last_se = out.pop("best_stderr").to_numpy(float), out.pop("last_stderr").to_numpy(float)
    out["best_value_low"], out["best_value_high"] = normal_interval(out.best_value, best_se)
    out["last_value_low"], out["last_value_high"] = normal_interval(out.last_value, last_se)
    itself = (out.best_layer == out.last_layer).fillna(False).to_numpy(bool)
    out["gain_low"], out["gain_high"] = normal_interval(out.gain, np.where(itself, 0.0, np.hypot(best_se, last_se)))
    out["metric"] = out.task.map(mains)
    out = _with_honest_best(out, df, best)
    summaries = df[df.layer.isna()].sort_values("subset")
    if "note" not in summaries:  # rows built by hand, or read before the column existed
        summaries = summaries.assign(note=pd.NA)
    notes = []
    for headline in all_headlines():  # the families' headlines that summary rows give, read from the registry now
        metric, column = headline.metric, headline.column
        values = summaries[summaries.metric == metric].drop_duplicates(TASK_KEY)[[*TASK_KEY, "value", "n", "stderr", "note"]]
        few = values.n < (headline.min_n or 0)
        if few.any():  # too few items to rank by: the value is withheld and the note says on how few it rests
            values = values.assign(note=values.note.where(~few, [f"{metric} {v:.2f} rests on {n} items, fewer than the {headline.min_n} "
                                                                 "a headline needs" for v, n in zip(values.value, values.n)]),
                                   value=values.value.where(~few))
        out = out.merge(values[[*TASK_KEY, "value", "n", "stderr"]].rename(columns={"value": column, "n": f"{column}_n", "stderr": f"{column}_se"}),
                        on=TASK_KEY, how="left")
        out[column] = out[column].astype(float)
        if headline.interval == "wilson":
            out[f"{column}_low"], out[f"{column}_high"] = wilson_interval(out[column], out[f"{column}_n"].astype(float))
        else:
            out[f"{column}_low"], out[f"{column}_high"] = normal_interval(out[column], out[f"{column}_se"].astype(float))
        out = out.drop(columns=f"{column}_se")
        notes.append(values[[*TASK_KEY, "note"]].dropna(subset=["note"]))  # (revision is often null: drop on the note alone)
    # Why a headline is missing ("not decodable beyond the baseline: ..."), the first such note per task.
    found = pd.concat(notes).drop_duplicates(TASK_KEY) if notes else pd.DataFrame(columns=[*TASK_KEY, "note"])
    out = out.merge(found, on=TASK_KEY, how="left")
    return out.sort_values(["model", "task", "protocol", "site"]).reset_index(drop=True)


# The honest_* summary rows (layerbench.honest_best) as summary columns: row metric -> {row column: summary column}.
HONEST_COLUMNS = {
    "honest_best": {"value": "honest_best_value", "stderr": "honest_best_value_se", "n": "honest_best_value_n"},
    "honest_best_layer": {"value": "honest_best_layer"},
    "honest_best_depth": {"value": "honest_best_depth"},
    "honest_gain": {"value": "honest_gain", "stderr": "honest_gain_se"},
}
NO_ITEMS_NOTE = "no item records for this task: the naive maximum only, not chosen on other items than it is scored on"


def _with_honest_best(out: pd.DataFrame, df: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """``out`` (summary rows) with the selection-honest best of each task's ranked subset and split, read from its
    ``honest_*`` rows (:mod:`layerbench.honest_best`): ``honest_best_value``, ``honest_best_layer``, ``honest_best_depth``,
    ``honest_gain``, the values' and the gain's 95% intervals, ``honest_best_value_n`` (its items; 0 where a task with a
    naive best has no records) and ``honest_note`` (why there is none)."""
    ranked = best[[*TASK_KEY, "subset", "split"]]
    rows = df[df.layer.isna() & df.metric.isin(list(HONEST_COLUMNS))].merge(ranked, on=[*TASK_KEY, "subset", "split"])
    for metric, names in HONEST_COLUMNS.items():
        part = rows[rows.metric == metric].drop_duplicates(TASK_KEY)[[*TASK_KEY, *names]].rename(columns=names)
        out = out.merge(part.astype({name: float for name in names.values()}), on=TASK_KEY, how="left")
    for column in ("honest_best_value", "honest_gain"):
        out[f"{column}_low"], out[f"{column}_high"] = normal_interval(out[column], out.pop(f"{column}_se"))
    missing = out.best_value.notna() & out.honest_best_value.isna()
    out["honest_best_value_n"] = out.honest_best_value_n.where(~missing, 0.0)
    out["honest_note"] = pd.Series([NO_ITEMS_NOTE if m else None for m in missing], index=out.index, dtype=object)
    return out


def metric_predicts_best_layer(df: pd.DataFrame, metric: str, mains: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """How well a label-free metric picks the best layer of the downstream tasks.

    For every (model, task) with per-layer rows of both ``metric`` and the
    task's main metric: Spearman's rank correlation across layers between the
    two (the label-free metric's sign flipped when lower is better, so positive
    means "agrees"), the layer the metric picks (its best by its direction;
    the last layer when it is descriptive), and the main score at that layer
    against the score at the last layer and at the true best layer.

    Returns:
        Columns ``model, task, protocol, site, spearman, picked_layer, picked_score, last_score, best_score,
        higher_is_better`` (the direction of the task's main score).
    """
    keys = ["model", "task", "protocol", "site"]
    rows = layer_rows(df)
    mains = mains if mains is not None else main_metrics(df)
    # Per (model, task, protocol, site) and layer: the first row of the task's main metric, and of `metric`.
    target = rows[(rows.metric == rows.task.map(mains)) & (rows.metric != metric)].drop_duplicates([*keys, "layer"])
    signal = rows[rows.metric == metric].drop_duplicates([*keys, "layer"])
    both = target.merge(signal, on=[*keys, "layer"], suffixes=("_target", "_signal")).sort_values([*keys, "layer"])
    out = []
    for (model, task, protocol, site), group in both.groupby(keys, sort=True):
        if len(group) < 3 or group.higher_is_better_target.isna().all():
            continue
        direction = group.higher_is_better_signal.iloc[0]
        descriptive = pd.isna(direction)
        sign = 1.0 if descriptive or bool(direction) else -1.0
        higher = bool(group.higher_is_better_target.iloc[0])
        layers = group.layer.to_numpy(dtype=np.int64)
        scores = pd.Series(group.value_target.to_numpy(dtype=np.float64), index=layers)
        score = scores if higher else -scores
        ranked = sign * pd.Series(group.value_signal.to_numpy(dtype=np.float64), index=layers)
        # A constant curve has no ranking: its correlation is undefined, not zero.
        rho = np.nan if ranked.nunique() < 2 or score.nunique() < 2 else ranked.corr(score, method="spearman")
        picked = int(layers.max()) if descriptive else int(ranked.idxmax())
        out.append(dict(model=model, task=task, protocol=protocol, site=site, spearman=float(rho), picked_layer=picked, picked_score=float(scores[picked]),
                        last_score=float(scores[layers.max()]), best_score=float(scores.max() if higher else scores.min()), higher_is_better=higher))
    return pd.DataFrame(out, columns=["model", "task", "protocol", "site", "spearman", "picked_layer", "picked_score", "last_score", "best_score",
                                      "higher_is_better"])


# The leaderboard's ranking rules: models are ranked together only on the same tasks at the same size.
ModelKey = tuple[str, "str | None"]  # (model, revision or None)


def task_signatures(table: pd.DataFrame, families: Mapping[str, str], sizes: Mapping[tuple[str, str | None, str], int]) -> dict[ModelKey, dict[str, frozenset]]:
    """Per (model, revision or None) and family: the set of (task, items) it has scores on, the thing two models must share to be ranked together.

    Args:
        table: :func:`summary` rows (one per model, revision and task).
        families: task -> its family.
        sizes: (model, revision, task) -> the items the task was run on; a task without a size has no scores of its main metric.
    """
    out: dict[ModelKey, dict[str, frozenset]] = {}
    for (model, revision), group in table.groupby(["model", "revision"], dropna=False, sort=True):
        revision = None if pd.isna(revision) else revision
        per_family: dict[str, set] = {}
        for task in group.task:
            if (model, revision, task) not in sizes:  # no rows of its main score (an encoder's back-patching task has only label-free metric rows)
                continue
            per_family.setdefault(families.get(task, "other"), set()).add((task, sizes[(model, revision, task)]))
        out[(model, revision)] = {family: frozenset(tasks) for family, tasks in per_family.items()}
    return out


def reference_signatures(signatures: Mapping[ModelKey, dict[str, frozenset]]) -> dict[str, frozenset]:
    """Per family, the task set most models were run on (ties: the one with more tasks, then more items): what the leaderboard ranks on."""
    from collections import Counter

    counts: dict[str, Counter[frozenset]] = {}
    for per_family in signatures.values():
        for family, signature in per_family.items():
            counts.setdefault(family, Counter())[signature] += 1
    return {family: max(found, key=lambda sig: (found[sig], len(sig), sum(n for _, n in sig))) for family, found in counts.items()}


def why_apart(mine: Mapping[str, frozenset], reference: Mapping[str, frozenset]) -> str | None:
    """Why a model's task sets differ from the reference ones (None: they match, and it is ranked)."""
    reasons = []
    for family, signature in sorted(mine.items()):
        wanted = reference[family]
        if signature == wanted:
            continue
        tasks, wanted_tasks = {t for t, _ in signature}, {t for t, _ in wanted}
        sizes, wanted_sizes = dict(signature), dict(wanted)
        smaller = [f"{t} {sizes[t]} of {wanted_sizes[t]}" for t in sorted(tasks & wanted_tasks) if sizes[t] != wanted_sizes[t]]
        parts = [f"{len(tasks & wanted_tasks)} of {len(wanted_tasks)} tasks"] if tasks != wanted_tasks else []
        parts += [f"{len(tasks - wanted_tasks)} other task(s)"] if tasks - wanted_tasks else []
        parts += [f"items {', '.join(smaller[:3])}" + (" ..." if len(smaller) > 3 else "")] if smaller else []
        reasons.append(f"{family}: {'; '.join(parts)}")
    return "; ".join(reasons) or None


def metric_pick_summary(df: pd.DataFrame, mains: Mapping[str, str | None] | None = None) -> dict[str, pd.DataFrame]:
    """How well each label-free metric picks a layer, over every (model, task) where the metric and the task's main score both exist.

    Returns:
        metric name -> :func:`metric_predicts_best_layer`'s rows plus ``gain`` (the main score at the picked layer minus the
        last layer's) and ``ceiling`` (the best layer's minus the last's: the selection-honest gain, :mod:`layerbench.honest_best`,
        where the task has item records, else the naive one, ``naive_ceiling``), all signed so that positive is better
        whatever the task's direction; ``picks_layers``: whether the metric has a direction (a descriptive one picks no layer).
    """
    from layerbench.metrics import list_metrics

    keys = ["model", "task", "protocol", "site"]
    honest = df[df.layer.isna() & (df.metric == "honest_gain")].drop_duplicates(keys).set_index(keys).value
    present = set(df.metric)
    out = {}
    for info in list_metrics():
        if info.name not in present:
            continue
        picks = metric_predicts_best_layer(df, info.name, mains)
        if picks.empty:
            continue
        sign = np.where(picks.higher_is_better.astype(bool), 1.0, -1.0)  # the main score's own direction
        naive = sign * (picks.best_score - picks.last_score)
        held_out = honest.reindex(pd.MultiIndex.from_frame(picks[keys])).to_numpy(float)
        out[info.name] = picks.assign(gain=sign * (picks.picked_score - picks.last_score), ceiling=np.where(np.isnan(held_out), naive, held_out),
                                      naive_ceiling=naive, picks_layers=info.higher_is_better is not None, direction=info.higher_is_better)
    return out


def equivalent_metrics(picks_of: Mapping[str, pd.DataFrame]) -> list[list[str]]:
    """Groups of metrics that order the layers of every (model, task) alike, from :func:`metric_pick_summary`'s output.

    Two metrics are grouped when they have the same direction, the same Spearman correlation with the task's score on every
    (model, task) pair (to 1e-9) and pick the same layer there: on these results they are one layer picker (a monotone
    transform of each other, such as ``effective_rank = exp(dataset_entropy)``). Each group is ordered with the metric the
    others are derived from (``MetricInfo.derived_from``) first, then by name; metrics alike to none are left out.
    """
    from layerbench.metrics import get as get_metric

    keys: dict[tuple, list[str]] = {}
    for name, picks in picks_of.items():
        ordered = picks.sort_values([c for c in ("model", "revision", "task", "protocol", "site", "subset") if c in picks])
        key = (picks.direction.iloc[0], len(ordered), tuple(np.round(ordered.spearman.to_numpy(float), 9)), tuple(ordered.picked_layer.tolist()),
               tuple(ordered.task), tuple(ordered.model))
        keys.setdefault(key, []).append(name)
    groups = []
    for names in keys.values():
        if len(names) > 1:
            sources = {get_metric(n).derived_from for n in names} & set(names)
            groups.append(sorted(names, key=lambda n: (n not in sources, n)))
    return sorted(groups)
