"""Layer pickers learned from other models' (or other task families') labelled curves, applied to a curve without labels.

Each ``fit_*`` function takes training rows of :func:`~layerbench.selection.table.layer_table` (with their ``score``)
and returns a picker: a function of one held-out curve's rows (its ``score`` column removed before it is called) to a
layer. The cross-fitting (which rows train which picks) is :func:`layerbench.selection.pick_layers`'s.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from layerbench.selection.rules import layer_at_depth
from layerbench.selection.table import PAIR

Picker = Callable[[pd.DataFrame], int]
# The relative depths a learned fixed depth is chosen from: 0, 0.05, ..., 1.
DEPTH_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


def _curves(train: pd.DataFrame):
    """(family, layers [L], scores [L]) of every training curve."""
    for _, curve in train.groupby(PAIR, dropna=False, sort=True):
        yield curve.family.iloc[0], curve.layer.to_numpy(int), curve.score.to_numpy(float)


def best_fixed_depth(curves: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The relative depth in :data:`DEPTH_GRID` whose layer has the least mean regret over ``curves``
    (``(layers [L], scores [L])`` each, higher is better): ``argmin_d mean_c (max s_c - s_c[layer_at_depth(d)])``; the
    shallowest on a tie."""
    regret = np.zeros(len(DEPTH_GRID))
    for layers, scores in curves:
        at = {int(layer): score for layer, score in zip(layers, scores)}
        regret += [np.nanmax(scores) - at[layer_at_depth(layers, d)] for d in DEPTH_GRID]
    return float(DEPTH_GRID[int(np.argmin(regret))])


def fit_fixed_depth(train: pd.DataFrame) -> Picker:
    """One relative depth per task family, the one of least mean regret on the training curves of that family (all
    training curves for a family they lack); a held-out curve gets the layer nearest its family's depth."""
    by_family: dict[str, list] = {}
    for family, layers, scores in _curves(train):
        by_family.setdefault(family, []).append((layers, scores))
    everything = [c for curves in by_family.values() for c in curves]
    depth = {family: best_fixed_depth(curves) for family, curves in by_family.items()}
    fallback = best_fixed_depth(everything) if everything else 1.0

    def pick(curve: pd.DataFrame) -> int:
        return layer_at_depth(curve.layer.to_numpy(int), depth.get(curve.family.iloc[0], fallback))

    return pick


def curve_features(curve: pd.DataFrame, metrics: list[str], families: tuple[str, ...] = ()) -> np.ndarray:
    """Features of each layer of one curve, shape ``(L, 1 + M + F)``: its relative depth; each label-free metric
    standardized within the curve, ``(x_l - mean_l x) / sd_l x`` (0 where the metric is constant or missing): models
    differ in scale (a norm, an entropy in nats), so only a metric's shape along the depth is shared; then one 0/1
    column per task family of ``families`` (the curve's family is known without labels)."""
    values = curve[metrics].to_numpy(float)
    known = ~np.isnan(values)
    count = np.maximum(known.sum(axis=0), 1)
    mean = np.where(known, values, 0.0).sum(axis=0) / count
    centred = np.where(known, values - mean, 0.0)
    sd = np.sqrt((centred**2).sum(axis=0) / count)
    z = centred / np.where(sd > 0, sd, 1.0)
    family = curve.family.to_numpy()
    return np.column_stack([curve.depth.to_numpy(float), z, *[(family == f).astype(float) for f in families]])


def curve_target(scores: np.ndarray) -> np.ndarray:
    """What the learned picker regresses, shape of ``scores``: each layer's score below the curve's best, in units of
    the curve's range, ``(s_l - max s) / (max s - min s)`` in [-1, 0] (0 everywhere on a flat curve), so that tasks
    scored in different units weigh alike."""
    span = np.nanmax(scores) - np.nanmin(scores)
    return (scores - np.nanmax(scores)) / span if span > 0 else np.zeros_like(scores)


def fit_ranker(train: pd.DataFrame, metrics: list[str], with_family: bool = True, seed: int = 0) -> Picker:
    """A gradient-boosted regression (scikit-learn's GradientBoostingRegressor: 60 trees of depth 3, learning rate
    0.1, 80% subsamples) of :func:`curve_target` on :func:`curve_features` over every training layer; a held-out
    curve gets the layer of highest prediction (the earliest on a tie). ``with_family``: the task family is a feature
    (leave one model out); without it for leave one family out, where the held-out family is one the model never saw."""
    from sklearn.ensemble import GradientBoostingRegressor

    families = tuple(sorted(train.family.unique())) if with_family else ()
    features, targets = [], []
    for _, curve in train.groupby(PAIR, dropna=False, sort=True):
        features.append(curve_features(curve, metrics, families))
        targets.append(curve_target(curve.score.to_numpy(float)))
    model = GradientBoostingRegressor(n_estimators=60, max_depth=3, learning_rate=0.1, subsample=0.8, random_state=seed)
    model.fit(np.vstack(features), np.concatenate(targets))

    def pick(curve: pd.DataFrame) -> int:
        predicted = model.predict(curve_features(curve, metrics, families))
        return int(curve.layer.to_numpy(int)[int(np.argmax(predicted))])

    return pick
