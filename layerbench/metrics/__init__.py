"""Label-free metrics of layer representations: pure functions on arrays, plus their registry.

Every function takes numpy arrays or torch tensors, computes in float64 and
returns a float; given a leading layer axis it returns ``[L]``, one value per
layer from batched linear algebra. See each function for shapes and formulas.
"""
from layerbench.metrics.arrays import MetricWarning
from layerbench.metrics.entropy import (
    dataset_entropy,
    dataset_entropy_normalized,
    effective_rank,
    gram_entropy,
    matrix_entropy,
    prompt_entropies,
    prompt_entropy,
    spectral_entropy,
)
from layerbench.metrics.geometry import anisotropy, curvature, curvatures, intrinsic_dimension, mean_curvature, mean_norm
from layerbench.metrics.invariance import dime, infonce, lidar
from layerbench.metrics.registry import MetricInfo, get, list_metrics

__all__ = [
    "MetricInfo",
    "MetricWarning",
    "anisotropy",
    "curvature",
    "curvatures",
    "dataset_entropy",
    "dataset_entropy_normalized",
    "dime",
    "effective_rank",
    "get",
    "gram_entropy",
    "infonce",
    "intrinsic_dimension",
    "lidar",
    "list_metrics",
    "matrix_entropy",
    "mean_curvature",
    "mean_norm",
    "prompt_entropies",
    "prompt_entropy",
    "spectral_entropy",
]
