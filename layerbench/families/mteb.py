"""The ``mteb`` family: an mteb task evaluated on every layer's pooled states (Skean et al. 2025)."""
from __future__ import annotations

from typing import Literal

from layerbench.families.registry import Family, Strict, register


class MtebSettings(Strict):
    """Knobs of the ``mteb`` family (per-layer MTEB, Skean et al. 2025).

    Attributes:
        protocol: ``layerbench`` or ``skean2024`` (the same evaluation; the
            protocol's site and pooling make the difference: a truncated
            model's normed states, mean-pooled).
        normalize: L2-normalize each layer's pooled vectors before mteb sees them.
        eval_splits: splits to evaluate (None: the task's own).
    """

    protocol: Literal["layerbench", "skean2024"] = "layerbench"
    normalize: bool = False
    eval_splits: list[str] | None = None


FAMILY = register(Family(
    name="mteb",
    description="an mteb task (STS, classification, clustering, retrieval...) on every layer's pooled states (Skean et al. 2025)",
    settings=MtebSettings,
    reads="states",
    evaluator="layerbench.evaluators.mteb:evaluate_mteb",
    sources=("mteb",),
    model_texts="layerbench.data.mteb_tasks:prompted_texts",
))
