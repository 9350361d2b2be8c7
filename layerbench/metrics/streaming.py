"""Pooled metrics of data sets larger than memory: read ``[L, N, D]`` a block of rows at a time.

The matrix entropy needs the spectrum of the N x N Gram matrix ``Z Zᵀ`` of the
centred unit rows; ``Zᵀ Z`` (D x D, the covariance form) has the same non-zero
eigenvalues, and it is a sum over rows: ``Σ_i z_i z_iᵀ``. So two passes over
the rows (the mean, then the sum) give the exact entropy in O(N·D²) time and
O(D²) memory, whatever N is. This is not an approximation: the result equals
the in-memory :func:`~layerbench.metrics.entropy.matrix_entropy` up to float64
rounding (tests: within 1e-9 nats). The mean norm and the anisotropy are sums
over rows too. The TwoNN intrinsic dimension needs nearest neighbours among
all rows (O(N²)); here it is computed on a seeded subsample of rows, which the
caller notes.

Input rows may be float16 on disk (``np.memmap``): each block is converted to
float64 before any sum, so storage precision is the only loss.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from layerbench.metrics.entropy import gram_entropy


def _blocks(n: int, rows: int) -> list[slice]:
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


def _unit(block: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)


def streaming_pooled_metrics(X: Any, rows_per_block: int = 8192) -> dict[str, np.ndarray]:
    """Dataset entropy, effective rank, anisotropy and mean norm of every layer of ``X`` ``[L, N, D]``, reading row blocks.

    Args:
        X: ``[L, N, D]`` array-like that supports slicing (an ``np.memmap`` of float16 is the intended case).
        rows_per_block: rows read at once per layer (memory: rows_per_block x D float64 plus D x D).

    Returns:
        ``{"dataset_entropy", "effective_rank", "anisotropy", "mean_norm", "mean_norm_stderr"}`` -> ``[L]``,
        with the definitions of the in-memory functions (nats, directions, cosine, state units).
    """
    L, n, d = X.shape
    out = {name: np.empty(L) for name in ("dataset_entropy", "effective_rank", "anisotropy", "mean_norm", "mean_norm_stderr")}
    blocks = _blocks(n, rows_per_block)
    for layer in range(L):
        total = np.zeros(d)
        unit_sum = np.zeros(d)
        unit_self = norm_sum = norm_squares = 0.0
        for rows in blocks:  # pass 1: the mean row, norms, and the unit-vector sums of the anisotropy
            block = np.asarray(X[layer, rows], dtype=np.float64)
            total += block.sum(axis=0)
            norms = np.linalg.norm(block, axis=1)
            norm_sum += norms.sum()
            norm_squares += np.square(norms).sum()
            unit = _unit(block)
            unit_sum += unit.sum(axis=0)
            unit_self += np.square(unit).sum()
        mean = total / n
        covariance = np.zeros((d, d))
        for rows in blocks:  # pass 2: Σ z zᵀ over the centred unit rows
            z = _unit(np.asarray(X[layer, rows], dtype=np.float64) - mean)
            covariance += z.T @ z
        entropy = float(gram_entropy(covariance))
        out["dataset_entropy"][layer] = entropy
        out["effective_rank"][layer] = np.exp(entropy)
        out["anisotropy"][layer] = (float(unit_sum @ unit_sum) - unit_self) / (n * (n - 1)) if n > 1 else np.nan
        mean_norm = norm_sum / n
        out["mean_norm"][layer] = mean_norm
        variance = (norm_squares - n * mean_norm**2) / (n - 1) if n > 1 else np.nan
        out["mean_norm_stderr"][layer] = np.sqrt(max(variance, 0.0) / n) if n > 1 else np.nan
    return out


def row_subsample(X: Any, limit: int, seed: int = 0) -> np.ndarray:
    """``X[:, rows]`` for a seeded sorted subsample of at most ``limit`` rows, in float32 in memory: ``[L, min(N, limit), D]``."""
    n = X.shape[1]
    rows = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False)) if n > limit else np.arange(n)
    return np.asarray(X[:, rows], dtype=np.float32)
