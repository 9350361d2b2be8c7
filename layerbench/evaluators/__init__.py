"""Evaluators, one per task family: arrays in, per-layer score rows out. They never load models or touch disk.

A family maps to its evaluator, or to None for ``label-free`` tasks: those
have no scores of their own, their rows are the label-free metric suite's
(:mod:`layerbench.evaluators.label_free`), which runs on every task.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.specs.schema import TaskSpec

Evaluator = Callable[[np.ndarray, TextDataset, TaskSpec], pd.DataFrame]

EVALUATORS: dict[str, Evaluator | None] = {
    "label-free": None,
}


def get_evaluator(family: str) -> Evaluator | None:
    """The evaluator of ``family`` (None for label-free tasks); an unknown family is a :class:`UserError`."""
    if family not in EVALUATORS:
        raise UserError(f"unknown task family '{family}'; known: {', '.join(sorted(EVALUATORS))}")
    return EVALUATORS[family]
