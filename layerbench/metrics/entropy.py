"""Matrix-based (Rényi) entropies of representations (Skean et al., 2025), in nats.

The matrix entropy of ``X`` ``[N, D]`` is the entropy of the spectrum of its
trace-normalized Gram matrix after the rows are centred and scaled to unit
length. It measures how evenly the vectors spread over directions: 0 when
they lie on one line, log(min(N - 1, D)) at most when they spread evenly.

Where we differ from the reference code of Skean et al.: rows are centred over
the whole set they describe (never per batch, which makes every pair of a
batch of two antipodal); Gram entries are never clamped at zero (clamping
breaks positive semi-definiteness and rotation invariance); arithmetic is
float64 (never bf16); negative eigenvalues from rounding are clipped at 0.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerbench.metrics.arrays import (
    as_numpy,
    chunk64,
    has_layer_axis,
    layer_chunks,
    namespace,
    nanmean_rows,
    per_layer,
    per_prompt_values,
    to_numpy,
    unit_rows,
    warn_undefined,
    with_layer_axis,
)


def spectral_entropy(p: Any, alpha: float = 1.0) -> Any:
    """Rényi entropy of distributions ``p`` ``[..., m]`` (non-negative, summing to 1 on the last axis; numpy or torch).

    alpha = 1: H = -Σ p log p (Shannon); otherwise H = log(Σ p^alpha) / (1 - alpha).
    Zero entries contribute nothing (0 log 0 = 0). Returns ``[...]`` in nats.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    xp = namespace(p)
    positive = p > 0
    safe = xp.where(positive, p, 1.0)
    # "+ 0.0" turns the -0.0 of a one-point distribution (-(1 · log 1)) into 0.0, which prints as 0, not -0.
    if alpha == 1:
        return -xp.sum(xp.where(positive, p * xp.log(safe), 0.0), axis=-1) + 0.0
    return xp.log(xp.sum(xp.where(positive, safe**alpha, 0.0), axis=-1)) / (1 - alpha) + 0.0


def gram_entropy(K: Any, alpha: float = 1.0) -> Any:
    """Entropy of positive semi-definite matrices ``K`` ``[..., m, m]`` (numpy or torch) divided by their trace.

    λ = eigvalsh(K / tr K), with values under the rounding level (m · eps · λ_max)
    set to 0; returns ``spectral_entropy(λ, alpha)`` ``[...]``.
    A zero matrix (tr K = 0: no spread at all) has entropy 0.
    """
    xp = namespace(K)
    trace = xp.linalg.trace(K)
    eigenvalues = xp.linalg.eigvalsh(K)
    # Eigenvalues that are zero in exact arithmetic come out as ±1e-16·λ_max;
    # for alpha < 1 even those would count (λ^0.5 = 1e-8), so everything under
    # the rounding level (numpy's matrix_rank tolerance) is set to 0.
    floor = eigenvalues[..., -1:] * K.shape[-1] * xp.finfo(K.dtype).eps
    eigenvalues = xp.where(eigenvalues > floor, eigenvalues, 0.0)
    total = xp.sum(eigenvalues, axis=-1, keepdims=True)  # = tr K up to rounding; exact normalization
    p = xp.where(total > 0, eigenvalues / xp.where(total > 0, total, 1.0), 0.0)
    return xp.where(trace > 0, spectral_entropy(p, alpha), 0.0)


def _centred_unit_gram(Z: Any) -> Any:
    """The smaller Gram matrix of already centred unit rows ``Z`` ``[..., N, D]`` (numpy or torch).

    ``Z Zᵀ`` ``[..., N, N]`` when N <= D, else ``Zᵀ Z`` ``[..., D, D]``: both
    have the same non-zero eigenvalues, so the smaller one is decomposed.
    """
    n, d = Z.shape[-2:]
    Zt = namespace(Z).matrix_transpose(Z)
    return Z @ Zt if n <= d else Zt @ Z


def matrix_entropy(X: Any, alpha: float = 1.0) -> float | np.ndarray:
    """Matrix entropy of ``X`` ``[N, D]`` (float) or of each layer of ``[L, N, D]`` (``[L]``), in nats.

    Z = rows of (X - mean row) scaled to unit norm (a zero row stays zero);
    K = Z Zᵀ (or Zᵀ Z when D < N); λ = eigenvalues of K / tr K clipped at 0;
    alpha = 1: -Σ λ log λ; otherwise log(Σ λ^alpha) / (1 - alpha).
    N orthonormal rows give log(N - 1); rows on one line give 0.
    A torch tensor is computed on its device (float64; float32 on MPS).
    """
    X, stacked = with_layer_axis(X, 2, "matrix_entropy", min_rows=1, on_device=True)
    xp = namespace(X)
    L, n, d = X.shape
    m = min(n, d)
    out = np.empty(L)
    for chunk in layer_chunks(L, 8.0 * (3 * n * d + 2 * m * m)):
        block = chunk64(X[chunk])
        Z = unit_rows(block - xp.mean(block, axis=1, keepdims=True))
        out[chunk] = to_numpy(gram_entropy(_centred_unit_gram(Z), alpha))
    return per_layer(out, stacked)


def dataset_entropy(X: Any, alpha: float = 1.0) -> float | np.ndarray:
    """Matrix entropy of a whole data set's pooled vectors ``[N, D]`` or ``[L, N, D]``, centred over all N.

    The same number as :func:`matrix_entropy`; the name says what it is of.
    """
    return matrix_entropy(X, alpha)


def dataset_entropy_normalized(X: Any, alpha: float = 1.0) -> float | np.ndarray:
    """:func:`dataset_entropy` divided by log min(N, D), the entropy of an even spectrum over min(N, D) directions.

    In [0, 1) (centring leaves at most N - 1 directions, so N <= D tops out at log(N-1)/log N).
    Comparable across data sets and models of different width.
    """
    X, stacked = with_layer_axis(X, 2, "dataset_entropy_normalized", min_rows=2)
    return per_layer(np.atleast_1d(matrix_entropy(X, alpha)) / np.log(min(X.shape[1], X.shape[2])), stacked)


def effective_rank(X: Any) -> float | np.ndarray:
    """exp(matrix_entropy(X, alpha=1)): the number of equally used directions (Roy & Vetterli, 2007).

    k orthogonal directions with equal mass give k. ``[N, D]`` -> float, ``[L, N, D]`` -> ``[L]``.
    """
    X, stacked = with_layer_axis(X, 2, "effective_rank")
    return per_layer(np.exp(np.atleast_1d(matrix_entropy(X, 1.0))), stacked)


def prompt_entropies(hidden: Any, lengths: Sequence[int] | np.ndarray, alpha: float = 1.0, normalize: bool = False) -> np.ndarray:
    """Matrix entropy of each prompt's token matrix, for a right-padded batch: the kernel behind :func:`prompt_entropy`.

    Args:
        hidden: ``[L, B, T, D]`` token states; row b's real tokens are
            positions ``0 .. lengths[b] - 1``, anything after is padding and ignored.
        lengths: ``[B]`` real token counts.
        alpha: Rényi order.
        normalize: divide each prompt's entropy by log min(T_b, D).

    Returns:
        float64 ``[L, B]``; NaN for prompts with fewer than 2 tokens (one
        token has no spread to measure).

    Each prompt is centred over its own real tokens; padded rows are set to
    zero, which adds only zero eigenvalues and so leaves the entropy unchanged.
    """
    H = as_numpy(hidden)
    if H.ndim != 4:
        raise ValueError(f"prompt_entropies takes [L, B, T, D] states, got shape {H.shape}")
    L, B, T, D = H.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.full((L, B), np.nan)
    padding = ~(np.arange(T)[None, :] < lengths[:, None])  # [B, T]
    m = min(T, D)
    # Chunks of prompts (a prompt's layers stay together); each is converted to
    # float64 on its own and then worked on in place.
    for chunk in layer_chunks(B, 8.0 * L * (T * D + 2 * m * m)):
        X = H[:, chunk].astype(np.float64)  # [L, b, T, D], our own copy
        pad = padding[chunk][None, :, :, None]
        np.copyto(X, 0.0, where=pad)  # not a multiplication: padding may hold NaN
        X -= X.sum(axis=2, keepdims=True) / np.maximum(lengths[chunk], 1)[None, :, None, None]
        np.copyto(X, 0.0, where=pad)
        norms = np.linalg.norm(X, axis=-1, keepdims=True)
        np.divide(X, norms, out=X, where=norms > 0)
        out[:, chunk] = gram_entropy(_centred_unit_gram(X), alpha)
    if normalize:
        out = out / np.log(np.maximum(np.minimum(lengths, D), 2))[None, :]
    out[:, lengths < 2] = np.nan
    return out


def prompt_entropy(token_matrices: Sequence[Any], alpha: float = 1.0, normalize: bool = False) -> float | np.ndarray:
    """Mean matrix entropy over prompts, each prompt's token matrix ``[T_i, D]`` (or ``[L, T_i, D]``).

    Prompts with fewer than 2 tokens are skipped, and a :class:`MetricWarning`
    says how many; the mean is over the rest (NaN if none remain).
    ``normalize`` divides each prompt's entropy by log min(T_i, D) first.
    Returns a float, or ``[L]`` for inputs with a layer axis.
    """
    values, lengths = per_prompt_values(prompt_entropies, token_matrices, alpha=alpha, normalize=normalize)
    skipped = int((lengths < 2).sum())
    warn_undefined("prompt_entropy", skipped, len(lengths), "prompts have fewer than 2 tokens and were skipped")
    return per_layer(nanmean_rows(values), has_layer_axis(token_matrices))

