"""Picking layers: every method on every curve, learned methods cross-fitted so that no curve's labels reach its pick."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from layerbench.errors import UserError
from layerbench.selection.methods import Method
from layerbench.selection.table import PAIR, scored_pairs

# What a picker must not see of the curve it picks for: its labelled score.
LABEL_COLUMNS = ["score", "score_metric", "score_sign"]
HOLDOUT_COLUMN = {"model": "model", "family": "family"}
PICK_COLUMNS = [*PAIR, "family", "method", "picked_layer", "picked_depth", "last_layer", "trained_on"]


def pick_layers(table: pd.DataFrame, methods: Iterable[Method], targets: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each method's layer for each curve of ``targets``.

    Args:
        table: :func:`~layerbench.selection.table.layer_table` rows; a learned method trains on those of its curves
            with a score at every layer (:func:`~layerbench.selection.table.scored_pairs`).
        methods: the methods to run (:func:`~layerbench.selection.methods.all_methods`).
        targets: the rows of the curves to pick for (default: every curve of ``table``). They may lack scores: a
            model with label-free rows only gets its picks too.

    A learned method is cross-fitted: for a curve of model m (``holdout="model"``) it is trained on the curves of every
    other model, and for a curve of task family f (``holdout="family"``) on the curves of every other family. A picker is
    called on a curve's rows without their score (:data:`LABEL_COLUMNS`), except the oracle's.

    Returns:
        Columns :data:`PICK_COLUMNS`: one row per (curve, method); ``trained_on`` says how many training curves a
        learned pick rests on and which ones were left out ("" for the others).

    Raises:
        UserError: a learned method has no training curve for some held-out group (results of one model alone).
    """
    targets = table if targets is None else targets
    training = scored_pairs(table)
    # (key, the curve, the curve without its labels), prepared once for every method.
    curves = [(key, curve, curve.drop(columns=LABEL_COLUMNS, errors="ignore"))
              for key, curve in ((k, c.reset_index(drop=True)) for k, c in targets.groupby(PAIR, dropna=False, sort=True))]
    out = []
    for method in methods:
        if method.pick is not None:
            for key, curve, unlabelled in curves:
                out.append(_row(key, curve, method, method.pick(curve if method.uses_labels else unlabelled), ""))
            continue
        assert method.fit is not None and method.holdout is not None, f"method {method.name} has neither a pick nor a fit with a holdout"
        column = HOLDOUT_COLUMN[method.holdout]
        for group in sorted({curve[column].iloc[0] for _, curve, _ in curves}):
            train = training[training[column] != group]
            n_train = train.groupby(PAIR, dropna=False).ngroups
            if n_train == 0:
                raise UserError(f"method '{method.name}' learns from other {method.holdout}s' labelled curves, and the results hold none "
                                f"but {group}'s; give it results of more {method.holdout}s, or pick another method")
            picker = method.fit(train)
            said = f"{n_train} curves, {method.holdout} {group} left out"
            for key, curve, unlabelled in curves:
                if curve[column].iloc[0] == group:
                    out.append(_row(key, curve, method, picker(unlabelled), said))
    # groupby hands a null key back as NaN: the keys take their table's types again, so that picks merge back onto it.
    return pd.DataFrame(out, columns=PICK_COLUMNS).astype({c: targets[c].dtype for c in PAIR})


def _row(key: tuple, curve: pd.DataFrame, method: Method, layer: int, trained_on: str) -> dict:
    layers = curve.layer.to_numpy(int)
    return dict(zip(PAIR, key)) | dict(family=curve.family.iloc[0], method=method.name, picked_layer=int(layer),
                                       picked_depth=float(curve.depth.to_numpy(float)[np.flatnonzero(layers == layer)[0]]),
                                       last_layer=int(layers.max()), trained_on=trained_on)
