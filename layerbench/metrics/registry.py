"""The metric registry: what ``layerbench list metrics`` shows, ``--metrics`` chooses and result rows are named by."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from layerbench.errors import UserError
from layerbench.metrics import entropy, geometry, invariance


@dataclass(frozen=True)
class MetricInfo:
    """One registered metric.

    Attributes:
        name: what ``--metrics`` and result rows call it.
        fn: the pure function. ``pooled``: ``[N, D]`` -> float, ``[L, N, D]`` -> ``[L]``;
            ``tokens``: a list of ``[T_i, D]`` (or ``[L, T_i, D]``) -> float (``[L]``);
            ``views``: ``[N, V, D]`` (or ``[L, N, V, D]``) -> float (``[L]``).
        input_kind: ``pooled`` (one vector per text), ``tokens`` (a matrix per
            text) or ``views`` (several augmented views per text).
        higher_is_better: True, False, or None for a descriptive statistic.
        cost: the asymptotic cost per layer, for choosing what to run on big data.
        unit: what the value is measured in.
        description: one line for ``layerbench list metrics``.
        per_prompt: ``tokens`` metrics only: the batched kernel
            ``([L, B, T, D], lengths [B]) -> [L, B]`` (NaN where undefined)
            that the capture runs on each batch; the metric is its mean over prompts.
        n_views: ``views`` metrics only: how many views per text it reads.
        min_texts: the fewest texts (rows) on which it is defined.
        derived_from: ``pooled`` metrics only: another metric whose values
            this one is a closed-form function of; a run computes that one
            once and applies ``derive`` instead of calling ``fn`` again.
        derive: ``(values [L], N, D) -> [L]``, the function of ``derived_from``'s values.
        on_device: ``fn`` is written once for any array namespace (numpy, or torch on the tensor's device),
            so the suite hands it its states on ``--metrics-device``; the others read numpy on the host.
    """

    name: str
    fn: Callable
    input_kind: Literal["pooled", "tokens", "views"]
    higher_is_better: bool | None
    cost: str
    unit: str
    description: str
    per_prompt: Callable | None = None
    n_views: int = 0
    min_texts: int = 2
    derived_from: str | None = None
    derive: Callable | None = None
    on_device: bool = False


def _views_pair(fn: Callable) -> Callable:
    """A two-view metric ``fn(A, B)`` as a function of ``[..., N, V, D]`` views (it reads views 0 and 1)."""

    def on_views(views):
        return fn(views[..., 0, :], views[..., 1, :])

    on_views.__doc__ = f"{fn.__name__} of views 0 and 1 of ``[N, V, D]`` (or ``[L, N, V, D]``)."
    return on_views


_METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("mean_norm", geometry.mean_norm, "pooled", None, "O(N·D)", "state units", "mean L2 norm of the pooled vectors"),
        MetricInfo("anisotropy", geometry.anisotropy, "pooled", None, "O(N·D)", "cosine", "mean cosine similarity over distinct pairs (uncentred)",
                   on_device=True),
        MetricInfo("dataset_entropy", entropy.dataset_entropy, "pooled", None, "O(N·D·m + m³), m = min(N, D)", "nats", "matrix entropy of the whole data set's pooled vectors (alpha = 1)",
                   on_device=True),
        MetricInfo("dataset_entropy_normalized", entropy.dataset_entropy_normalized, "pooled", None, "O(N·D·m + m³), m = min(N, D)", "fraction",
                   "dataset_entropy / log min(N, D)", derived_from="dataset_entropy", derive=lambda h, n, d: h / np.log(min(n, d))),
        MetricInfo("effective_rank", entropy.effective_rank, "pooled", None, "O(N·D·m + m³), m = min(N, D)", "directions",
                   "exp(dataset_entropy): equally used directions", derived_from="dataset_entropy", derive=lambda h, n, d: np.exp(h)),
        MetricInfo("intrinsic_dimension", geometry.intrinsic_dimension, "pooled", None, "O(N²·D)", "dimensions", "TwoNN estimate (Facco et al., 2017), duplicates dropped", min_texts=3),
        MetricInfo("prompt_entropy", entropy.prompt_entropy, "tokens", None, "O(T²·D + T³) per prompt", "nats",
                   "mean matrix entropy of each prompt's token states (alpha = 1)", per_prompt=entropy.prompt_entropies),
        MetricInfo("prompt_entropy_normalized", partial(entropy.prompt_entropy, normalize=True), "tokens", None, "O(T²·D + T³) per prompt", "fraction",
                   "mean of prompt entropy / log min(T, D)", per_prompt=partial(entropy.prompt_entropies, normalize=True)),
        MetricInfo("curvature", geometry.mean_curvature, "tokens", None, "O(T·D) per prompt", "radians",
                   "mean turning angle between consecutive token steps", per_prompt=geometry.curvatures),
        MetricInfo("infonce", _views_pair(invariance.infonce), "views", False, "O(N²·D)", "nats",
                   "symmetric InfoNCE between two augmented views (temperature 0.1)", n_views=2),
        MetricInfo("dime", _views_pair(invariance.dime), "views", True, "O(P·N³), P = 10 permutations", "nats",
                   "DiME between two augmented views: matrix mutual information", n_views=2),
        MetricInfo("lidar", invariance.lidar, "views", True, "O(N·V·D² + D³)", "directions",
                   "LiDAR over 8 augmented views per text (Thilak et al., 2023)", n_views=8, on_device=True),
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
