"""Label-free metrics of layer representations: pure functions on arrays, plus their registry."""
from layerbench.metrics.geometry import anisotropy, mean_norm
from layerbench.metrics.registry import MetricInfo, get, list_metrics

__all__ = ["MetricInfo", "anisotropy", "get", "list_metrics", "mean_norm"]
