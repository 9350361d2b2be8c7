"""Which layer, with no labels: label-free layer selection, scored against each (model, task)'s best layer.

pandas in, pandas out::

    rows = layerbench.load_results("results")
    result = layerbench.selection.evaluate(rows)      # every method on every curve, scored
    result.summary                                    # per method: regret and gain over the last layer, 95% intervals
    result.picks                                      # per (model, task, method): the layer, its score, the oracle's

A method (:mod:`~layerbench.selection.methods`) reads a curve's label-free metrics (:mod:`~layerbench.selection.table`)
and picks a layer (:mod:`~layerbench.selection.rules` for the fixed rules, :mod:`~layerbench.selection.learned` for
the learned ones, cross-fitted by :mod:`~layerbench.selection.picks`); :mod:`~layerbench.selection.scoring` scores it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from layerbench.selection.methods import Method, all_methods, get_method
from layerbench.selection.picks import pick_layers
from layerbench.selection.report import format_picks, format_summary
from layerbench.selection.scoring import metric_spearman, score_picks, selection_summary
from layerbench.selection.table import PAIR, SCORED_FAMILIES, label_free_metrics, layer_table, scored_pairs

__all__ = ["DEFAULT_METHOD", "Method", "PAIR", "SCORED_FAMILIES", "Selection", "all_methods", "evaluate", "format_picks", "format_summary", "get_method", "label_free_metrics",
           "layer_table", "metric_spearman", "model_layer", "pick_layers", "recommend", "score_picks", "scored_pairs", "selection_summary"]


@dataclass(frozen=True)
class Selection:
    """Every method's picks and how they score.

    Attributes:
        picks: :func:`score_picks` rows, one per (scored curve, method).
        summary: :func:`selection_summary` per method, sorted by regret, with each method's ``kind``, ``source`` and
            ``description`` (:class:`Method`).
        by_family: :func:`selection_summary` per (family, method).
        spearman: :func:`metric_spearman` per (curve, metric).
    """

    picks: pd.DataFrame
    summary: pd.DataFrame
    by_family: pd.DataFrame
    spearman: pd.DataFrame


def evaluate(rows: pd.DataFrame, *, protocol: str | None = "layerbench", methods: list[str] | None = None,
             mains: Mapping[str, str | None] | None = None, families: Mapping[str, str] | None = None, summary: pd.DataFrame | None = None) -> Selection:
    """Run every method (or ``methods``) on every curve of ``rows`` with a score at every layer, and score the picks.

    Args:
        rows: result rows (:func:`layerbench.load_results`).
        protocol: only this protocol's curves (None: all).
        methods: method names (default: all, the oracle included as the reference).
        mains, families: task -> main metric, task -> family (default: from the installed task specs).
        summary: :func:`layerbench.summary` of ``rows``, when the caller has it (its honest best is the oracle).
    """
    from layerbench.analysis import summary as summarize

    table = layer_table(rows, protocol=protocol, mains=mains, families=families)
    scored = scored_pairs(table)
    known = all_methods(label_free_metrics(rows))
    chosen = [known[name] if name in known else get_method(name) for name in (methods or list(known))]
    # A learned method needs labelled curves of another model (or family) than the one it picks for: with fewer than
    # two, it is left out of the scoring (asked for by name, pick_layers says why it cannot run).
    groups = {"model": scored.model.nunique(), "family": scored.family.nunique()}
    chosen = [m for m in chosen if m.fit is None or groups[m.holdout or "model"] >= 2 or (methods and m.name in methods)]
    picks = pick_layers(table, chosen, targets=scored)
    honest = summary if summary is not None else summarize(rows, mains)
    result = score_picks(picks, table, honest)
    spearman = metric_spearman(table)
    described = pd.DataFrame([{"method": m.name, "kind": m.kind, "source": m.source, "description": m.description} for m in chosen])
    overall = _with_spearman(selection_summary(result), spearman, chosen, []).merge(described, on="method", how="left")
    by_family = _with_spearman(selection_summary(result, by=("family", "method")), spearman, chosen, ["family"])
    return Selection(result, overall.sort_values(["regret", "method"]).reset_index(drop=True), by_family, spearman)


def _with_spearman(summary: pd.DataFrame, spearman: pd.DataFrame, methods: list[Method], by: list[str]) -> pd.DataFrame:
    """``summary`` with ``spearman``: for a method that picks a metric's extreme, the mean over curves (per ``by``) of
    Spearman's correlation across layers between that metric and the score, signed so that positive means the metric
    ranks the layers as the score does in the method's direction; NaN for the other methods."""
    means = spearman.groupby([*by, "metric"]).spearman.mean()
    values = []
    for row in summary.itertuples():
        method = next((m for m in methods if m.name == row.method), None)
        if method is None or method.highest is None:
            values.append(float("nan"))
            continue
        key = (*[getattr(row, c) for c in by], method.reads[0])
        value = means.get(key if by else method.reads[0], float("nan"))
        values.append(float(value) * (1.0 if method.highest else -1.0))
    return summary.assign(spearman=values)


DEFAULT_METHOD = "learned-depth"  # the least regret on the committed results (docs/layer-selection.md): what `layerbench pick` uses


def recommend(rows: pd.DataFrame, *, model: str | None = None, task: str | None = None, method: str = DEFAULT_METHOD,
              protocol: str | None = "layerbench") -> pd.DataFrame:
    """Each curve's recommended layer by ``method``, from label-free rows (a learned method trained on the other models'
    or families' labelled curves in ``rows``).

    Returns:
        :func:`pick_layers` rows of the curves of ``model`` and ``task`` (default: all) of the :data:`SCORED_FAMILIES`, plus ``rule`` (the method's
        description and source) and, where the rows have the task's scores, ``picked_score``, ``best_layer`` and
        ``best_score`` (to check a pick against, never read by it).

    Raises:
        UserError: an unknown method, model or task, or no label-free rows for them.
    """
    from layerbench.errors import UserError

    table = layer_table(rows, protocol=protocol)
    chosen = get_method(method, label_free_metrics(rows))
    targets = table[table.family.isin(SCORED_FAMILIES)]  # the tasks whose layers have a downstream quality to pick for
    for column, wanted in (("model", model), ("task", task)):
        if wanted is not None:
            if wanted not in set(targets[column]):
                known = ", ".join(sorted(set(targets[column]))) or "none"
                raise UserError(f"no label-free rows of {column} '{wanted}'" + (f" under protocol {protocol}" if protocol else "") + f"; known: {known}")
            targets = targets[targets[column] == wanted]
    picks = pick_layers(table, [chosen], targets=targets)
    scores = targets[[*PAIR, "layer", "score"]]
    best = scores.dropna(subset=["score"]).sort_values("score", ascending=False, kind="stable").drop_duplicates(PAIR)
    picks = picks.merge(scores.rename(columns={"layer": "picked_layer", "score": "picked_score"}), on=[*PAIR, "picked_layer"], how="left")
    picks = picks.merge(best.rename(columns={"layer": "best_layer", "score": "best_score"}), on=PAIR, how="left")
    return picks.assign(rule=f"{chosen.name}: {chosen.description} ({chosen.source})")


def model_layer(picks: pd.DataFrame) -> pd.DataFrame:
    """One layer per model from its curves' picks: the layer nearest the median picked relative depth.

    Returns:
        Columns ``model, revision, layer, depth, curves``.
    """
    out = []
    for (model, revision), group in picks.groupby(["model", "revision"], dropna=False, sort=True):
        depth = float(group.picked_depth.median())
        last = int(group.last_layer.max())
        layer = int(round(depth * last))
        out.append(dict(model=model, revision=revision, layer=layer, depth=layer / last if last else 0.0, curves=len(group)))
    return pd.DataFrame(out, columns=["model", "revision", "layer", "depth", "curves"])
