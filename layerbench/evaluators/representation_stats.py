"""Per-layer descriptive statistics of pooled states: any registered ``pooled`` metric."""
from __future__ import annotations

import numpy as np
import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.metrics import geometry, registry
from layerbench.specs.schema import TaskSpec


def evaluate(states: np.ndarray, data: TextDataset, spec: TaskSpec) -> pd.DataFrame:
    """One row per (metric, layer).

    Args:
        states: float32 ``[L+1, N, D]`` pooled states of ``data.texts``.
        data: the texts (labels unused).
        spec: names the metrics; each must take ``pooled`` input.

    Returns:
        Columns ``metric, layer, value, stderr, n, higher_is_better``.
        ``stderr`` is the standard error of the mean over texts where the
        metric is a mean of per-text values (``mean_norm``), else NaN.
    """
    n = states.shape[1]
    states = geometry.as_float64(states)  # once here; the metrics then take it as it is
    frames = []
    for name in spec.metrics:
        info = registry.get(name)
        if info.input_kind != "pooled":
            raise UserError(f"task '{spec.name}': metric '{name}' needs {info.input_kind} input, not pooled states")
        values = np.asarray(info.fn(states), dtype=np.float64)
        stderr = np.full(values.shape, np.nan)
        if name == "mean_norm":
            stderr = np.linalg.norm(states, axis=-1).std(axis=1, ddof=1) / np.sqrt(n)
        frames.append(
            pd.DataFrame(
                {
                    "metric": name,
                    "layer": np.arange(values.shape[0]),
                    "value": values,
                    "stderr": stderr,
                    "n": n,
                    "higher_is_better": info.higher_is_better,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
