"""Geometric statistics of pooled representations.

Every function takes ``X`` of shape ``[N, D]`` (N vectors) and returns a
float, or ``[L, N, D]`` and returns a float64 array ``[L]``: one value per
layer from one vectorised computation, not a loop over layers. Inputs may be
numpy arrays or torch tensors of any float dtype; arithmetic is float64.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def as_float64(X: Any) -> np.ndarray:
    """``X`` as a float64 numpy array (torch tensors are moved to the CPU first)."""
    if hasattr(X, "detach"):
        X = X.detach().to("cpu").double().numpy()
    return np.asarray(X, dtype=np.float64)


def _per_layer(values: np.ndarray, stacked: bool) -> float | np.ndarray:
    return values if stacked else float(values[0])


def _stack(X: Any, min_rows: int, name: str) -> tuple[np.ndarray, bool]:
    """``X`` as float64 ``[L, N, D]`` and whether it came with a layer axis."""
    X = as_float64(X)
    if X.ndim not in (2, 3):
        raise ValueError(f"{name} takes [N, D] or [L, N, D], got shape {X.shape}")
    stacked = X.ndim == 3
    X = X if stacked else X[None]
    if X.shape[1] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {X.shape[1]}")
    return X, stacked


def mean_norm(X: Any) -> float | np.ndarray:
    """Mean Euclidean norm of the rows: (1/N) Σ_i ||x_i||₂, in the units of X."""
    X, stacked = _stack(X, 1, "mean_norm")
    return _per_layer(np.linalg.norm(X, axis=-1).mean(axis=-1), stacked)


def anisotropy(X: Any) -> float | np.ndarray:
    """Mean cosine similarity over distinct pairs of rows, uncentred.

    With u_i = x_i / ||x_i|| (a zero row stays zero and counts as cosine 0):
    A = (||Σ_i u_i||² - Σ_i ||u_i||²) / (N (N - 1)), which equals the mean of
    cos(x_i, x_j) over i ≠ j in O(N·D) time instead of O(N²·D).
    In [-1/(N-1), 1]; 1 means every vector points the same way.
    """
    X, stacked = _stack(X, 2, "anisotropy")
    norms = np.linalg.norm(X, axis=-1, keepdims=True)
    U = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    n = X.shape[1]
    total = np.square(U.sum(axis=1)).sum(axis=-1)
    self_terms = np.square(U).sum(axis=(1, 2))
    return _per_layer((total - self_terms) / (n * (n - 1)), stacked)
