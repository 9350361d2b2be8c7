"""Evaluators, one per task family: arrays in, per-layer score rows out. They never load models or touch disk."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.evaluators import representation_stats
from layerbench.specs.schema import TaskSpec

Evaluator = Callable[[np.ndarray, TextDataset, TaskSpec], pd.DataFrame]

EVALUATORS: dict[str, Evaluator] = {
    "representation-stats": representation_stats.evaluate,
}


def get_evaluator(family: str) -> Evaluator:
    if family not in EVALUATORS:
        raise UserError(f"unknown task family '{family}'; known: {', '.join(sorted(EVALUATORS))}")
    return EVALUATORS[family]
