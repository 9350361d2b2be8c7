"""Scoring picks against the best layer: regret, gain over the last layer, and their bootstrap intervals.

Every score is signed so that higher is better. For a curve with scores ``s_l`` and a picked layer ``p``:

- ``regret = oracle - s_p``, the oracle being the selection-honest best (:mod:`layerbench.honest_best`: a layer chosen
  on half the items and scored on the other half) where the task has item records, else the naive maximum ``max_l s_l``;
- ``naive_regret = max_l s_l - s_p`` (never below 0; 0 for the oracle method);
- ``gain = s_p - s_L`` over the last layer L.

A label-free pick reads no label, so ``s_p`` carries no winner's curse; the naive maximum does, and the honest best
removes it: a rule may then show a regret below 0, picking better than half the labels would.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from layerbench.selection.table import PAIR, scored_pairs

SCORED_COLUMNS = ["picked_score", "last_score", "best_score", "oracle_score", "oracle", "regret", "naive_regret", "gain"]
# Bootstrap resamples of (models, then curves within each model) behind every interval.
N_BOOTSTRAP = 2000
NEAR_ORACLE = 0.01  # the goal: a pick within this of the oracle on average


def score_picks(picks: pd.DataFrame, table: pd.DataFrame, honest_best: pd.DataFrame | None = None) -> pd.DataFrame:
    """``picks`` (:func:`~layerbench.selection.picks.pick_layers`) of the curves with a score at every layer, scored.

    Args:
        picks: one row per (curve, method).
        table: :func:`~layerbench.selection.table.layer_table` rows with the scores.
        honest_best: :func:`layerbench.summary` rows (``PAIR`` and ``honest_best_value``, in the main metric's own
            direction); None: the naive maximum is every curve's oracle.

    Returns:
        ``picks`` restricted to the scored curves plus :data:`SCORED_COLUMNS` (``oracle``: "honest" or "naive").
    """
    scored = scored_pairs(table)
    at = scored[[*PAIR, "layer", "score"]]
    curves = scored.groupby(PAIR, dropna=False, sort=False).agg(best_score=("score", "max"), last_layer_=("layer", "max"), sign=("score_sign", "first"))
    curves = curves.reset_index().astype({c: scored[c].dtype for c in PAIR})  # a null key comes back from groupby as NaN
    last = at.rename(columns={"layer": "last_layer_", "score": "last_score"})
    curves = curves.merge(last, on=[*PAIR, "last_layer_"], how="left")
    if honest_best is not None and "honest_best_value" in honest_best:
        curves = curves.merge(honest_best[[*PAIR, "honest_best_value"]].drop_duplicates(PAIR), on=PAIR, how="left")
    else:
        curves["honest_best_value"] = np.nan
    honest = curves.sign * curves.honest_best_value.astype(float)
    curves["oracle_score"] = honest.where(honest.notna(), curves.best_score)
    curves["oracle"] = np.where(honest.notna(), "honest", "naive")
    out = picks.merge(curves[[*PAIR, "best_score", "last_score", "oracle_score", "oracle"]], on=PAIR, how="inner")
    out = out.merge(at.rename(columns={"layer": "picked_layer", "score": "picked_score"}), on=[*PAIR, "picked_layer"], how="left")
    out["regret"] = out.oracle_score - out.picked_score
    out["naive_regret"] = out.best_score - out.picked_score
    out["gain"] = out.picked_score - out.last_score
    return out[[*picks.columns, *SCORED_COLUMNS]]


def bootstrap_weights(groups: np.ndarray, n_resamples: int = N_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """Two-stage bootstrap weights of items grouped by ``groups`` (shape ``(P,)``), shape ``(n_resamples, P)``.

    Each resample draws the groups with replacement, then within each drawn group its items with replacement; an
    item's weight is how often it was drawn. A weighted mean over the items is then one resample of a mean over
    models and their tasks: the interval counts the spread between models, not only between tasks.
    """
    rng = np.random.default_rng(seed)
    names, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    members = [np.flatnonzero(index == k) for k in range(len(names))]
    weights = np.zeros((n_resamples, len(index)))
    for b in range(n_resamples):
        counts = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)))
        for k in np.flatnonzero(counts):
            size = len(members[k])
            weights[b, members[k]] += rng.multinomial(counts[k] * size, np.full(size, 1.0 / size))
    return weights


def selection_summary(scored: pd.DataFrame, by: Sequence[str] = ("method",), n_resamples: int = N_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """Each method's mean regret and gain over its curves (per ``by``), with 95% bootstrap intervals.

    Args:
        scored: :func:`score_picks` rows.
        by: the columns to summarize per (``("method",)``, or ``("method", "family")``).

    Returns:
        One row per group: ``curves``, ``models``, ``regret`` (with ``regret_low``, ``regret_high``),
        ``naive_regret``, ``gain`` (with ``gain_low``, ``gain_high``), ``near_oracle`` (the share of curves whose regret
        is at most :data:`NEAR_ORACLE`), ``beats_last`` (curves whose pick scores above the last layer's) and
        ``honest_share`` (the share of curves whose oracle is the honest best). The intervals are percentiles of
        :func:`bootstrap_weights` resamples (models, then curves), paired across methods: the same resamples for every
        method of one group of curves.
    """
    out = []
    by = list(by)
    outer = [c for c in by if c != "method"]
    if scored.empty:
        return pd.DataFrame(columns=[*outer, "method", "curves", "models", "regret", "regret_low", "regret_high", "gain", "gain_low", "gain_high",
                                     "naive_regret", "near_oracle", "beats_last", "honest_share"])
    for key, part in (scored.groupby(outer, sort=True) if outer else [((), scored)]):
        key = key if isinstance(key, tuple) else (key,)
        # Every method has one row per curve (pick_layers): sorted alike, row i is one curve for all of them.
        part = part.sort_values(["method", *PAIR], na_position="first")
        weights = bootstrap_weights(part[part.method == part.method.iloc[0]].model.to_numpy(), n_resamples, seed)
        for method, rows in part.groupby("method", sort=False):
            row = dict(zip(outer, key)) | {"method": method, "curves": len(rows), "models": rows.model.nunique()}
            for column in ("regret", "gain"):
                values = rows[column].to_numpy(float)
                means = weights @ values / weights.sum(axis=1)
                row |= {column: float(values.mean()), f"{column}_low": float(np.quantile(means, 0.025)), f"{column}_high": float(np.quantile(means, 0.975))}
            row |= {"naive_regret": float(rows.naive_regret.mean()), "near_oracle": float((rows.regret <= NEAR_ORACLE).mean()),
                    "beats_last": int((rows.gain > 0).sum()), "honest_share": float((rows.oracle == "honest").mean())}
            out.append(row)
    return pd.DataFrame(out)


def metric_spearman(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rank correlation across layers between each label-free metric and the main score, per scored curve.

    Computed for all curves at once: within each curve the layers are ranked (average ranks for ties) and Pearson's
    correlation of the ranks is taken, which is Spearman's.

    Returns:
        Columns ``PAIR, family, metric, spearman`` (NaN where either curve is constant: no ranking to compare), with
        the metric's own values (not signed by its direction).
    """
    from layerbench.selection.table import label_free_metrics

    scored = scored_pairs(table)
    metrics = [m for m in label_free_metrics(pd.DataFrame({"metric": scored.columns})) if m in scored]
    if scored.empty or not metrics:
        return pd.DataFrame(columns=[*PAIR, "family", "metric", "spearman"])
    curve = scored.groupby(PAIR, dropna=False, sort=False).ngroup().to_numpy()
    ranks = scored[["score", *metrics]].groupby(curve).rank(method="average")  # NaN stays NaN
    out = []
    for metric in metrics:
        pair = ranks[["score", metric]].dropna()
        groups = pair.groupby(curve[pair.index])
        centred = pair - groups.transform("mean")
        covariance = (centred.score * centred[metric]).groupby(curve[pair.index]).sum()
        spread = np.sqrt((centred**2).groupby(curve[pair.index]).sum().prod(axis=1))
        rho = (covariance / spread.where(spread > 0)).reindex(range(curve.max() + 1))
        out.append(pd.DataFrame({"curve": rho.index, "metric": metric, "spearman": rho.to_numpy(float)}))
    keys = scored.assign(curve=curve).drop_duplicates("curve")[["curve", *PAIR, "family"]]
    return keys.merge(pd.concat(out), on="curve").drop(columns="curve").sort_values([*PAIR, "metric"]).reset_index(drop=True)
