"""The per-layer table layer selection reads: one row per (model, task, protocol, site, layer), its label-free metrics
side by side and, apart from them, the task's main score at that layer."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from layerbench.analysis import TASK_KEY, layer_rows, main_metrics

# One (model, task) curve: a model run of a task under one protocol at one capture site.
PAIR = TASK_KEY
# The families whose main score is a labelled, downstream quality read at every layer: a pick is scored on them. (The
# label-free family's main score is itself a label-free metric; the similarity family's, CKA to the last layer, is
# not a quality; back-patching, consistency and latent language score interventions or read-outs, not a layer's vectors.)
SCORED_FAMILIES = ("probe", "mteb")


def label_free_metrics(df: pd.DataFrame) -> list[str]:
    """The registered label-free metrics that have rows in ``df``, sorted by name."""
    from layerbench.metrics import list_metrics

    present = set(df.metric.unique())
    return [info.name for info in list_metrics() if info.name in present]


def task_families(tasks: list[str]) -> dict[str, str]:
    """task -> its family (``probe``, ``mteb``, ...) from the installed task specs; "other" for a task they do not know."""
    from layerbench.specs import all_tasks
    from layerbench.specs.protocols import base_task

    specs = all_tasks()
    return {t: (specs[base_task(t)].family if base_task(t) in specs else "other") for t in tasks}


def layer_table(df: pd.DataFrame, *, protocol: str | None = "layerbench", mains: Mapping[str, str | None] | None = None,
                families: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Label-free metrics and the main score of every (model, task) at every layer, one row per layer.

    Args:
        df: result rows (:func:`layerbench.load_results`).
        protocol: only the curves of this protocol (None: all).
        mains: task -> its main metric (default: :func:`layerbench.analysis.main_metrics`).
        families: task -> its family (default: :func:`task_families`).

    Returns:
        Columns ``model, revision, task, protocol, site, family, layer, depth, n_layers``, one column per label-free
        metric (:func:`label_free_metrics`; NaN where the layer has none), ``score`` (the main score, signed so that
        higher is better; NaN where the task has no main score at that layer), ``score_metric`` and ``score_sign``
        (+1 or -1, the main metric's direction). Only the layers with at least one label-free metric are kept: a
        pick reads nothing else. Sorted by pair and layer.
    """
    rows = layer_rows(df)
    if protocol is not None:
        rows = rows[rows.protocol == protocol]
    metrics = label_free_metrics(rows)
    if rows.empty or not metrics:
        return pd.DataFrame(columns=[*PAIR, "family", "layer", "depth", "n_layers", *metrics, "score", "score_metric", "score_sign"])
    keys = [*PAIR, "layer"]
    features = rows[rows.metric.isin(metrics)].sort_values(["subset", "split"], na_position="first").drop_duplicates([*keys, "metric"])
    # An unknown revision is null: kept as "" while it is an index level (a null key would drop the rows), restored after.
    table = features.assign(revision=features.revision.fillna("")).set_index([*keys, "metric"]).value.unstack("metric")
    table = table.reindex(columns=metrics).reset_index()
    table.columns.name = None
    table["revision"] = table.revision.replace("", pd.NA)
    shape = features.drop_duplicates(keys)[[*keys, "depth", "n_layers"]]
    table = table.merge(shape, on=keys, how="left")
    mains = mains if mains is not None else main_metrics(df)
    # The main score of the ranked subset and split (the first in name order, as layerbench.summary ranks them).
    target = rows[rows.metric == rows.task.map(mains)].sort_values(["subset", "split"], na_position="first")
    first = target.drop_duplicates(PAIR)[[*PAIR, "subset", "split"]]
    target = target.merge(first, on=[*PAIR, "subset", "split"]).drop_duplicates(keys)
    sign = np.where(target.higher_is_better.astype("boolean").fillna(True).to_numpy(bool), 1.0, -1.0)
    target = target.assign(score=sign * target.value.to_numpy(float), score_metric=target.metric, score_sign=sign)
    table = table.merge(target[[*keys, "score", "score_metric", "score_sign"]], on=keys, how="left")
    families = families if families is not None else task_families(sorted(table.task.unique()))
    table.insert(len(PAIR), "family", table.task.map(lambda t: families.get(t, "other")))
    table["layer"] = table.layer.astype(int)
    return table.sort_values([*PAIR, "layer"], na_position="first").reset_index(drop=True)


def scored_pairs(table: pd.DataFrame, families: tuple[str, ...] = SCORED_FAMILIES) -> pd.DataFrame:
    """The rows of the pairs of ``families`` that have a main score at every one of their (at least 3) layers: the
    pairs a pick can be scored on."""
    table = table[table.family.isin(families)]
    complete = table.groupby(PAIR, dropna=False, sort=False).score.transform(lambda s: bool(s.notna().all() and len(s) >= 3))
    return table[complete.astype(bool)].reset_index(drop=True)
