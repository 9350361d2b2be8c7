"""Evaluators, one per task family: captured states in, per-layer score rows out. They never load models or touch disk.

An evaluator takes ``states`` (variant name -> pooled states ``[K, N, D]``
of the task's texts at one capture site; ``clean`` always, robustness
variants when the run asks for them), the :class:`TextDataset`, the spec,
the seed and ``layers`` (the layer number of each of the K rows: ``0..L``,
or ``1..L`` at the ``mlp-input`` site), and returns rows
``metric, layer, value, stderr, n, higher_is_better`` (plus ``subset`` and
``split`` where it sets them). ``label-free`` tasks have no evaluator: their
rows are the label-free metric suite's (:mod:`layerbench.metrics.suite`),
which runs on every task.

The intervention families (``backpatch``, ``consistency``) run the model
themselves: their evaluators take the loaded :class:`ModelHandle` instead of
captured states, ``(handle, data, spec, seed)``, and apply only to causal
language models.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.specs.schema import TaskSpec

Evaluator = Callable[..., pd.DataFrame]


def _probe(states: Mapping[str, np.ndarray], data: TextDataset, spec: TaskSpec, seed: int, layers: Sequence[int] | None = None) -> pd.DataFrame:
    from layerbench.evaluators.probe import evaluate_probe

    return evaluate_probe(states, data, spec, seed, layers)


def _mteb(states: Mapping[str, np.ndarray], data: TextDataset, spec: TaskSpec, seed: int, layers: Sequence[int] | None = None) -> pd.DataFrame:
    from layerbench.evaluators.mteb import evaluate_mteb  # imports mteb (seconds): only when an mteb task runs

    return evaluate_mteb(states, data, spec, seed, layers)


def _backpatch(handle, data: TextDataset, spec: TaskSpec, seed: int) -> pd.DataFrame:
    from layerbench.evaluators.backpatch import evaluate_backpatch

    return evaluate_backpatch(handle, data, spec, seed)


def _consistency(handle, data: TextDataset, spec: TaskSpec, seed: int) -> pd.DataFrame:
    from layerbench.evaluators.consistency import evaluate_consistency

    return evaluate_consistency(handle, data, spec, seed)


EVALUATORS: dict[str, Evaluator | None] = {
    "probe": _probe,
    "mteb": _mteb,
    "label-free": None,
    "backpatch": _backpatch,
    "consistency": _consistency,
}


def get_evaluator(family: str) -> Evaluator | None:
    """The evaluator of ``family`` (None for label-free tasks); an unknown family is a :class:`UserError`."""
    if family not in EVALUATORS:
        raise UserError(f"unknown task family '{family}'; known: {', '.join(sorted(EVALUATORS))}")
    return EVALUATORS[family]
