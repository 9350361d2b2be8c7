"""Input handling shared by every metric: float64 arrays, an optional layer axis, memory-bounded chunks.

Every metric takes its input with or without a leading layer axis. Without
one it returns a Python float; with one (``[L, ...]``) it returns a float64
array ``[L]`` computed by batched linear algebra over the whole stack (for
example one ``eigvalsh`` over ``[L, N, N]``), never a Python loop over layers.
Where a stack would not fit in memory it is cut into chunks of layers, each
still one batched call (:func:`layer_chunks`).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

# Working memory one batched call may use; float64 stacks above it are chunked over
# layers (or prompts). Measured on SmolLM2 token states: chunks of 16-32 MB ran the
# per-prompt kernels 6x faster than 256 MB ones, which spend their time faulting in
# freshly mapped pages for every temporary.
CHUNK_BYTES = 32 * 2**20


class MetricWarning(UserWarning):
    """A metric was undefined for some inputs (too few tokens, duplicate points) and says how many."""


def as_numpy(X: Any) -> np.ndarray:
    """``X`` as a numpy array of its own float dtype (float16/bfloat16 tensors become float32), without a float64 copy.

    For kernels that convert one chunk at a time rather than the whole input.
    """
    if hasattr(X, "detach"):
        X = X.detach().to("cpu")
        return (X.float() if X.element_size() < 4 else X).numpy()  # numpy has no bfloat16
    return np.asarray(X)


def namespace(X: Any) -> Any:
    """The array API namespace of ``X`` (array-api-compat's numpy or torch): what a metric written once computes with.

    A metric that takes ``xp = namespace(X)`` runs in numpy for numpy input and
    in torch, on the tensor's device, for a tensor: one formula, two backends.
    """
    import array_api_compat

    return array_api_compat.array_namespace(X)


def array_device(X: Any) -> Any:
    """The device ``X`` lives on (``"cpu"`` for numpy), for creating arrays beside it."""
    import array_api_compat

    return array_api_compat.device(X)


def to_numpy(X: Any) -> np.ndarray:
    """``X`` as a float64 numpy array (a tensor is copied to the host by :func:`as_numpy`)."""
    return np.asarray(as_numpy(X), dtype=np.float64)


def _float64_or_32(X: Any) -> Any:
    import torch

    return torch.float32 if X.device.type == "mps" else torch.float64


def with_layer_axis(X: Any, ndim: int, name: str, min_rows: int = 1, on_device: bool = False) -> tuple[Any, bool]:
    """``X`` as an array with a leading layer axis, and whether it came with one.

    The dtype is left as it is (float32 stays float32): metrics convert one
    chunk of layers at a time with :func:`chunk64`, so a float32 stack is never
    copied whole to float64.

    Args:
        X: an array of ``ndim`` dimensions, or ``ndim + 1`` with layers first.
        ndim: the dimensions of one layer's input (2 for ``[N, D]``, 3 for ``[N, V, D]``).
        name: the metric, for error messages.
        min_rows: the fewest rows (axis 0 of one layer's input) the metric accepts.
        on_device: the metric is written for any array namespace (:func:`namespace`):
            a torch tensor stays a tensor on its device; otherwise it becomes numpy.
    """
    if not (on_device and hasattr(X, "detach")):
        X = as_numpy(X)
    elif X.element_size() < 4:
        X = X.float()  # bfloat16/float16 states: chunks go to float64 (float32 on MPS) anyway
    if X.ndim not in (ndim, ndim + 1):
        raise ValueError(f"{name} takes an array of {ndim} dimensions, or {ndim + 1} with layers first; got shape {X.shape}")
    stacked = X.ndim == ndim + 1
    X = X if stacked else X[None]
    if X.shape[1] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {X.shape[1]}")
    return X, stacked


def chunk64(X: Any) -> Any:
    """``X`` as float64 (no copy when it already is: callers must not write into it); a tensor stays on its device,
    in float32 on Apple's MPS, which has no float64."""
    if hasattr(X, "detach"):
        return X.to(_float64_or_32(X))
    return np.asarray(X, dtype=np.float64)


def per_layer(values: Any, stacked: bool) -> float | np.ndarray:
    """``values`` ``[L]`` (numpy, or a tensor brought to the host) as they are for stacked input, else the single value as a float."""
    values = to_numpy(values)
    return values if stacked else float(values[0])


def layer_chunks(n_layers: int, bytes_per_layer: float, budget: int = CHUNK_BYTES) -> Iterator[slice]:
    """Slices of the layer axis whose working memory stays under ``budget`` bytes (at least one layer each)."""
    step = max(1, int(budget // max(bytes_per_layer, 1)))
    for start in range(0, n_layers, step):
        yield slice(start, min(start + step, n_layers))


def unit_rows(X: Any) -> Any:
    """Rows of ``X`` ``[..., N, D]`` (numpy or torch) scaled to unit L2 norm; a zero row stays zero."""
    xp = namespace(X)
    norms = xp.linalg.vector_norm(X, axis=-1, keepdims=True)
    return xp.where(norms > 0, X / xp.where(norms > 0, norms, 1.0), 0.0)


def warn_undefined(name: str, count: int, total: int, reason: str) -> None:
    """Say that ``count`` of ``total`` inputs were left out of ``name`` and why."""
    if count:
        warnings.warn(f"{name}: {count} of {total} {reason}", MetricWarning, stacklevel=3)


def padded_token_batches(token_matrices: Sequence[Any], budget: int = CHUNK_BYTES) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Prompts' token matrices ``[T_i, D]`` (or ``[L, T_i, D]``) as right-padded stacks of similar lengths.

    Yields:
        ``(indices, padded, lengths)``: positions in ``token_matrices``,
        float64 ``[L, b, T_max, D]`` (L = 1 without a layer axis), ``[b]``
        token counts; each stack stays under ``budget`` bytes (one prompt at least).
    """
    if len(token_matrices) == 0:
        raise ValueError("no prompts given")
    mats = [as_numpy(t) for t in token_matrices]  # cast to float64 while padding, not copied twice
    mats = [t[None] if t.ndim == 2 else t for t in mats]
    if any(t.ndim != 3 or t.shape[0] != mats[0].shape[0] or t.shape[2] != mats[0].shape[2] for t in mats):
        raise ValueError("every prompt must be [T_i, D], or [L, T_i, D] with the same L and D")
    L, D = mats[0].shape[0], mats[0].shape[2]
    lengths = np.array([t.shape[1] for t in mats], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and 8.0 * L * (stop + 1 - start) * max(lengths[order[stop]], 1) * D <= budget:
            stop += 1
        indices = order[start:stop]
        padded = np.zeros((L, len(indices), max(int(lengths[indices].max()), 1), D))
        for j, i in enumerate(indices):
            padded[:, j, : lengths[i]] = mats[i]
        yield indices, padded, lengths[indices]
        start = stop


def has_layer_axis(token_matrices: Sequence[Any]) -> bool:
    """Whether prompts were given as ``[L, T_i, D]`` rather than ``[T_i, D]``."""
    return len(token_matrices) > 0 and np.ndim(token_matrices[0]) == 3


def per_prompt_values(kernel: Callable[..., np.ndarray], token_matrices: Sequence[Any], **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """``kernel`` (a ``[L, B, T, D]`` + lengths -> ``[L, B]`` function) over every prompt: ``[L, P]`` values and ``[P]`` lengths."""
    values: np.ndarray | None = None
    lengths = np.empty(len(token_matrices), dtype=np.int64)
    for indices, padded, counts in padded_token_batches(token_matrices):
        if values is None:
            values = np.empty((padded.shape[0], len(token_matrices)))
        values[:, indices] = kernel(padded, counts, **options)
        lengths[indices] = counts
    if values is None:
        raise ValueError("per_prompt_values needs at least one prompt")
    return values, lengths


def nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis of ``values`` ``[L, P]`` ignoring NaN: ``[L]``, NaN where a row has no value (and no warning)."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=-1)
    total = np.where(defined, values, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


def mean_and_stderr(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``values`` ``[L, P]``, ignoring NaN: the mean, its standard error (sample std / √n) and n, each ``[L]``.

    The mean is NaN where a row has no value, the standard error where it has fewer than two.
    """
    defined = ~np.isnan(values)
    count = defined.sum(axis=-1)
    mean = nanmean_rows(values)
    deviations = np.where(defined, values - mean[:, None], 0.0)
    variance = np.divide(np.square(deviations).sum(axis=-1), count - 1, out=np.full(count.shape, np.nan), where=count > 1)
    return mean, np.sqrt(variance / np.maximum(count, 1)), count


def stderr_of(values: np.ndarray) -> float:
    """Standard error of the mean of ``values`` ``[n]`` (sample std / √n, NaN ignored), NaN below two values: :func:`mean_and_stderr` of one row."""
    return float(mean_and_stderr(np.asarray(values, dtype=np.float64)[None])[1][0])
