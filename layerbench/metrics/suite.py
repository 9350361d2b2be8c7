"""The label-free metric suite on one task's capture: one row per (metric, layer).

It runs on every task (``layerbench run --metrics``): pooled metrics on the
pooled states of all the task's texts; token metrics on per-prompt values
that the capture computed from the token states of a sample of prompts;
view metrics on the pooled states of augmented views of that sample.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from layerbench.errors import UserError
from layerbench.metrics import MetricInfo, get, list_metrics
from layerbench.metrics.arrays import mean_and_stderr
from layerbench.metrics.geometry import row_norms
from layerbench.metrics.streaming import row_subsample, streaming_pooled_metrics

# Bumped when a metric's definition changes, so stored metric rows are recomputed.
METRICS_VERSION = 1
# Rows the TwoNN intrinsic dimension reads when the states are spilled to disk (it is O(N²) in rows).
NEIGHBOUR_ROWS = 4096
# States one slice of layers may take on the metrics' device (their own dtype; the metrics' float64 chunks come on top).
DEVICE_BYTES = 2 * 2**30


@dataclass(frozen=True)
class MetricPlan:
    """Which metrics to compute and what inputs they need.

    Attributes:
        metrics: the registered metrics, in the order given.
    """

    metrics: tuple[MetricInfo, ...]

    @classmethod
    def from_names(cls, names: Sequence[str] | None) -> "MetricPlan":
        """The metrics named (None: every registered metric); an unknown name is a :class:`UserError`."""
        if names is None:
            return cls(tuple(list_metrics()))
        if len(set(names)) != len(names):
            raise UserError(f"--metrics names a metric twice: {', '.join(names)}")
        return cls(tuple(get(name) for name in names))

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def of_kind(self, kind: str) -> list[MetricInfo]:
        return [m for m in self.metrics if m.input_kind == kind]

    @property
    def kernels(self) -> dict[str, Callable[..., np.ndarray]]:
        """Per-prompt kernels the capture must run (token metrics): ``[K, B, T, D]`` states and ``[B]`` lengths -> ``[K, B]``."""
        return {m.name: m.per_prompt for m in self.of_kind("tokens") if m.per_prompt is not None}

    @property
    def n_views(self) -> int:
        """Views per sampled text the view metrics need (0 if none is chosen)."""
        return max((m.n_views for m in self.of_kind("views")), default=0)

    @property
    def needs_sample(self) -> bool:
        return bool(self.kernels) or self.n_views > 0


def _frame(info: MetricInfo, values: np.ndarray, stderr: np.ndarray, n: np.ndarray | int, layers: Sequence[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "metric": info.name,
            "layer": np.asarray(layers),
            "value": values,
            "stderr": stderr,
            "n": n,
            "higher_is_better": info.higher_is_better,
        }
    )


def on_device(fn: Callable[[Any], Any], states: np.ndarray, device: str, budget: int = DEVICE_BYTES) -> np.ndarray:
    """``fn`` (a metric written for any array namespace) of ``states`` ``[K, ...]``, computed in torch on ``device``:
    float64 ``[K]``.

    The states go to the device a slice of layers at a time, each under ``budget`` bytes in their own dtype,
    so a task's states never need to fit on the device beside the model; the metric is per layer, so the
    slices' values are the whole stack's.
    """
    import torch

    per_layer = states[0].nbytes
    step = max(1, budget // max(per_layer, 1))
    values = [np.atleast_1d(np.asarray(fn(torch.from_numpy(np.ascontiguousarray(states[start : start + step])).to(device)), dtype=np.float64))
              for start in range(0, states.shape[0], step)]
    return np.concatenate(values)


def evaluate_metrics(
    plan: MetricPlan,
    pooled: np.ndarray,
    per_prompt: dict[str, np.ndarray],
    views: np.ndarray | None,
    layers: Sequence[int] | None = None,
    device: str | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows of every planned metric at every layer, and notes on what was skipped.

    Args:
        plan: the metrics.
        pooled: ``[K, N, D]`` pooled states of all the task's texts at one capture site.
        per_prompt: token metric name -> ``[K, P]`` per-prompt values (NaN where undefined).
        views: ``[K, S, V, D]`` pooled states of V augmented views of S sampled
            texts, or None when no view metric is planned.
        layers: the layer number of each of the K rows (default ``0..K-1``).
        device: a torch device (``cuda``, ``cpu``...) the metrics written for any array
            namespace (``MetricInfo.on_device``: the entropies, LiDAR, anisotropy) compute on,
            in torch; None: numpy on the host. The values agree within float64 rounding.

    Returns:
        Rows with columns ``metric, layer, value, stderr, n, higher_is_better``
        and metric name -> a note (prompts or layers left out, or why a
        metric was skipped entirely: fewer texts than it needs).
        ``stderr`` is the standard error over prompts for token metrics and
        over texts for ``mean_norm``; NaN for whole-set statistics.
    """
    layers = list(layers) if layers is not None else list(range(pooled.shape[0]))
    frames, notes = [], {}
    computed: dict[str, np.ndarray] = {}  # pooled values by name, for metrics derived from them
    # States spilled to disk (a float16 memmap: larger than memory) are read in row blocks, exactly (covariance form).
    streamed = streaming_pooled_metrics(pooled) if isinstance(pooled, np.memmap) and plan.of_kind("pooled") else None
    if streamed is not None:
        computed |= {name: streamed[name] for name in ("dataset_entropy", "effective_rank", "anisotropy", "mean_norm")}

    def compute(info: MetricInfo, data: np.ndarray) -> np.ndarray:
        """``[K]`` values of one metric: on ``device`` in torch when it is written for any array namespace, else numpy."""
        if device is not None and info.on_device:
            return on_device(info.fn, data, device)
        return np.asarray(info.fn(data), dtype=np.float64)

    for info in plan.metrics:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if info.input_kind == "tokens":
                values = per_prompt[info.name]  # [L+1, P]
                mean, stderr, count = mean_and_stderr(values)
                left_out = values.shape[1] - int(count.min(initial=values.shape[1]))
                if left_out:
                    notes[info.name] = f"{left_out} of {values.shape[1]} prompts too short for it (at the worst layer), left out"
                frames.append(_frame(info, mean, stderr, count, layers))
                continue
            if info.input_kind == "pooled":
                data = pooled
            elif views is not None:
                data = views[..., : info.n_views, :]
            else:
                raise ValueError(f"view metric {info.name} is planned but no augmented views were captured")
            n = data.shape[1]
            if streamed is not None and info.name == "intrinsic_dimension" and n > NEIGHBOUR_ROWS:
                data = row_subsample(pooled, NEIGHBOUR_ROWS)  # nearest neighbours among all rows would be O(N²)
                notes[info.name] = f"on a seeded subsample of {NEIGHBOUR_ROWS} of {n} texts (states spilled to disk)"
            if n < info.min_texts:
                notes[info.name] = f"skipped: needs at least {info.min_texts} texts, got {n}"
                continue
            if info.derived_from is not None:
                assert info.derive is not None, f"{info.name} names derived_from but no derive"
                source = get(info.derived_from)
                if source.name not in computed:
                    computed[source.name] = compute(source, data)
                values = info.derive(computed[source.name], n, data.shape[-1])
            elif info.name in computed:
                values = computed[info.name]
            else:
                values = computed.setdefault(info.name, compute(info, data))
            stderr = np.full(values.shape, np.nan)
            if info.name == "mean_norm":
                stderr = streamed["mean_norm_stderr"] if streamed is not None else mean_and_stderr(row_norms(data))[1]
            frames.append(_frame(info, values, stderr, n, layers))
        if caught:
            # A warning names its metric ("lidar: 3 of 16 ..."); the note is keyed by it already and is logged after it.
            notes[info.name] = "; ".join(filter(None, [notes.get(info.name), *(str(w.message).removeprefix(f"{info.name}: ") for w in caught)]))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["metric", "layer", "value", "stderr", "n", "higher_is_better"])
    return rows, notes
