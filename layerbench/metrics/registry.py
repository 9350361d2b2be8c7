"""The metric registry: what ``layerbench list metrics`` shows and tasks name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from layerbench.errors import UserError
from layerbench.metrics import geometry


@dataclass(frozen=True)
class MetricInfo:
    """One registered metric.

    Attributes:
        name: what task specs and result rows call it.
        fn: the pure function; ``[N, D]`` -> float, ``[L, N, D]`` -> ``[L]``.
        input_kind: ``pooled`` (one vector per text), ``tokens`` (a matrix per
            text) or ``views`` (several augmented views per text).
        higher_is_better: True, False, or None for a descriptive statistic.
        cost: the asymptotic cost per layer, for choosing what to run on big data.
        description: one line for ``layerbench list metrics``.
    """

    name: str
    fn: Callable
    input_kind: Literal["pooled", "tokens", "views"]
    higher_is_better: bool | None
    cost: str
    description: str


_METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("mean_norm", geometry.mean_norm, "pooled", None, "O(N·D)", "mean L2 norm of the pooled vectors"),
        MetricInfo("anisotropy", geometry.anisotropy, "pooled", None, "O(N·D)", "mean cosine similarity over distinct pairs (uncentred)"),
    ]
}


def get(name: str) -> MetricInfo:
    """The registered metric ``name``; an unknown name is a :class:`UserError`."""
    try:
        return _METRICS[name]
    except KeyError:
        raise UserError(f"unknown metric '{name}'; known: {', '.join(sorted(_METRICS))}") from None


def list_metrics() -> list[MetricInfo]:
    """Every registered metric, sorted by name."""
    return [_METRICS[k] for k in sorted(_METRICS)]
