"""Builders of an evaluator's rows: one per metric and layer, or one per metric summarising all layers.

An evaluator returns rows ``metric, layer, value, stderr, n,
higher_is_better`` (plus ``subset``, ``split`` or ``source_layer`` where it
sets them); :func:`~layerbench.results.schema.complete_rows` adds the
identity. A summary row (a concept depth, an AUROC over paths, a count)
describes no single layer: its ``layer`` is null (<NA>), never a number.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from layerbench.metrics.arrays import stderr_of

__all__ = ["layer_row", "mean_row", "summary_row"]


def layer_row(metric: str, layer: int, value: float, *, n: int, higher_is_better: bool | None, stderr: float = math.nan, **extra: Any) -> dict[str, Any]:
    """One metric at one layer."""
    return dict(metric=metric, layer=int(layer), value=float(value), stderr=float(stderr), n=int(n), higher_is_better=higher_is_better, **extra)


def mean_row(metric: str, layer: int | None, values: np.ndarray, *, higher_is_better: bool | None, **extra: Any) -> dict[str, Any]:
    """The mean of ``values`` ``[n]`` (NaN if empty) with its standard error (sample std / sqrt(n); NaN below two), n = len(values)."""
    values = np.asarray(values, dtype=np.float64)
    value = float(values.mean()) if len(values) else math.nan
    row = dict(metric=metric, layer=layer, value=value, stderr=stderr_of(values), n=len(values), higher_is_better=higher_is_better, **extra)
    return row


def summary_row(metric: str, value: float, *, n: int, higher_is_better: bool | None, stderr: float = math.nan, **extra: Any) -> dict[str, Any]:
    """One metric about all layers of a task: ``layer`` is None (stored as <NA>)."""
    return dict(metric=metric, layer=None, value=float(value), stderr=float(stderr), n=int(n), higher_is_better=higher_is_better, **extra)
