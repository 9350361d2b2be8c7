"""Geometric statistics of representations: norms, anisotropy, curvature, intrinsic dimension.

Pooled metrics take ``X`` ``[N, D]`` (-> float) or ``[L, N, D]`` (-> ``[L]``),
token metrics one prompt's ``[T, D]`` or ``[L, T, D]``. Inputs may be numpy
arrays or torch tensors of any float dtype; arithmetic is float64.
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


def mean_norm(X: Any) -> float | np.ndarray:
    """Mean Euclidean norm of the rows: (1/N) Σ_i ||x_i||₂, in the units of X."""
    X, stacked = with_layer_axis(X, 2, "mean_norm")
    return per_layer(row_norms(X).mean(axis=-1), stacked)


def row_norms(X: np.ndarray) -> np.ndarray:
    """Euclidean norms of the rows of ``X`` ``[L, N, D]`` in float64: ``[L, N]``."""
    out = np.empty(X.shape[:2])
    for chunk in layer_chunks(X.shape[0], 8.0 * X.shape[1] * X.shape[2]):
        out[chunk] = np.linalg.norm(chunk64(X[chunk]), axis=-1)
    return out


def anisotropy(X: Any) -> float | np.ndarray:
    """Mean cosine similarity over distinct pairs of rows, uncentred.

    With u_i = x_i / ||x_i|| (a zero row stays zero and counts as cosine 0):
    A = (||Σ_i u_i||² - Σ_i ||u_i||²) / (N (N - 1)), which equals the mean of
    cos(x_i, x_j) over i ≠ j in O(N·D) time instead of O(N²·D).
    In [-1/(N-1), 1]; 1 means every vector points the same way.
    A torch tensor is computed on its device.
    """
    X, stacked = with_layer_axis(X, 2, "anisotropy", min_rows=2, on_device=True)
    xp = namespace(X)
    L, n, d = X.shape
    out = np.empty(L)
    for chunk in layer_chunks(L, 8.0 * 2 * n * d):
        U = unit_rows(chunk64(X[chunk]))
        total = xp.sum(xp.sum(U, axis=1) ** 2, axis=-1)
        self_terms = xp.sum(U**2, axis=(1, 2))
        out[chunk] = to_numpy((total - self_terms) / (n * (n - 1)))
    return per_layer(out, stacked)


def curvatures(hidden: Any, lengths: Any) -> np.ndarray:
    """Mean turning angle of each prompt's token path, for a right-padded batch: the kernel behind :func:`curvature`.

    Args:
        hidden: ``[L, B, T, D]`` token states; row b's real tokens are positions ``0 .. lengths[b] - 1``.
        lengths: ``[B]`` real token counts.

    Returns:
        float64 ``[L, B]`` in radians, in [0, π]: with v_t = x_{t+1} - x_t,
        the mean over t of the angle between v_t and v_{t+1}. Steps of length zero
        (a token state repeated exactly) have no direction; angles touching
        them are left out. NaN where no angle is defined (T < 3).
    """
    H = as_numpy(hidden)
    if H.ndim != 4:
        raise ValueError(f"curvatures takes [L, B, T, D] states, got shape {H.shape}")
    L, B, T, D = H.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.full((L, B), np.nan)
    if T < 3:
        return out
    # Angle t joins steps t and t+1, both inside the prompt when t + 2 < length.
    inside = np.arange(T - 2)[None, :] + 2 < lengths[:, None]  # [B, T-2]
    for chunk in layer_chunks(B, 8.0 * L * 3 * T * D):
        steps = np.diff(H[:, chunk].astype(np.float64), axis=2)  # [L, b, T-1, D]
        norms = np.linalg.norm(steps, axis=-1)  # [L, b, T-1]
        np.divide(steps, norms[..., None], out=steps, where=norms[..., None] > 0)
        defined = inside[chunk][None] & (norms[:, :, :-1] > 0) & (norms[:, :, 1:] > 0)
        # 2·atan2(|u - v|, |u + v|) is the angle between unit vectors u and v, accurate
        # near 0 and π where arccos(u·v) loses half its digits.
        pair = steps[:, :, 1:] - steps[:, :, :-1]
        apart = np.linalg.norm(pair, axis=-1)
        np.add(steps[:, :, 1:], steps[:, :, :-1], out=pair)
        together = np.linalg.norm(pair, axis=-1)
        angles = np.where(defined, 2.0 * np.arctan2(apart, together), 0.0)
        count = defined.sum(axis=-1)
        out[:, chunk] = np.divide(angles.sum(axis=-1), count, out=np.full(count.shape, np.nan), where=count > 0)
    return out


def curvature(tokens: Any) -> float | np.ndarray:
    """Mean curvature of one prompt's token path ``[T, D]`` (float) or of each layer's ``[L, T, D]`` (``[L]``), in radians.

    v_t = x_{t+1} - x_t; curvature = mean over t of arccos(cos(v_t, v_{t+1})),
    in [0, π], on the raw token vectors (0 for a straight line, 2π/n on a
    regular n-gon). NaN, with a :class:`MetricWarning`, when T < 3; callers
    average over prompts.
    """
    X, stacked = with_layer_axis(tokens, 2, "curvature")
    values = curvatures(X[:, None], [X.shape[1]])[:, 0]
    warn_undefined("curvature", int(X.shape[1] < 3), 1, "prompts have fewer than 3 tokens; curvature is NaN")
    return per_layer(values, stacked)


def row_hashes(X: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of float64 ``X`` ``[L, N, D]``: ``[L, N]``; equal rows (0.0 and -0.0 alike) hash alike."""
    bits = np.ascontiguousarray(X + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
    multipliers = np.random.default_rng(0).integers(1, 2**63, size=X.shape[-1], dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        return (bits * multipliers).sum(axis=-1, dtype=np.uint64)  # wraps modulo 2^64


def duplicate_rows(X: np.ndarray) -> np.ndarray:
    """Which rows of ``X`` ``[L, N, D]`` repeat an earlier row of the same layer exactly: bool ``[L, N]``.

    Rows are hashed (their float64 bit patterns times random odd multipliers,
    summed modulo 2⁶⁴) and sorted per layer in one batched sort; only rows
    whose hashes collide are compared exactly, so a collision cannot merge
    distinct rows and distinct data costs one hash per row.
    """
    L, n, _ = X.shape
    hashes = row_hashes(X)
    order = np.argsort(hashes, axis=1, kind="stable")  # equal hashes stay in index order
    sorted_hashes = np.take_along_axis(hashes, order, axis=1)
    duplicate = np.zeros((L, n), dtype=bool)
    starts = np.ones((L, n), dtype=bool)
    starts[:, 1:] = sorted_hashes[:, 1:] != sorted_hashes[:, :-1]
    if starts.all():
        return duplicate
    # Compare every row with the first (lowest-index) row of its hash run.
    positions = np.maximum.accumulate(np.where(starts, np.arange(n)[None, :], 0), axis=1)
    first = np.take_along_axis(order, positions, axis=1)
    layer, position = np.nonzero(~starts)
    row, lead = order[layer, position], first[layer, position]
    equal = np.all(X[layer, row] == X[layer, lead], axis=-1)
    duplicate[layer[equal], row[equal]] = True
    for collided in np.unique(layer[~equal]):  # a true hash collision: settle that layer exactly
        _, kept = np.unique(X[collided], axis=0, return_index=True)
        duplicate[collided] = True
        duplicate[collided, kept] = False
    return duplicate


def intrinsic_dimension(X: Any, discard_fraction: float = 0.1) -> float | np.ndarray:
    """TwoNN intrinsic dimension (Facco et al., 2017) of ``X`` ``[N, D]`` (float) or each layer of ``[L, N, D]`` (``[L]``).

    Exact duplicate rows are dropped first (they would make a nearest-neighbour
    distance zero). For each remaining point, μ = r₂ / r₁, the ratio of its
    second to first nearest-neighbour Euclidean distance. Under the model,
    -log(1 - F(μ)) = d · log μ; with μ sorted and F(μ_(i)) = i / N, d is the
    least-squares slope through the origin over the smallest
    (1 - discard_fraction) · N ratios (the largest are noisy; Facco et al. drop 10%).
    NaN, with a :class:`MetricWarning`, for a layer left with fewer than 3 distinct points.
    """
    X, stacked = with_layer_axis(X, 2, "intrinsic_dimension", min_rows=3)
    if not 0 <= discard_fraction < 1:
        raise ValueError(f"discard_fraction must be in [0, 1), got {discard_fraction}")
    L, n, _ = X.shape
    duplicate = np.zeros((L, n), dtype=bool)
    ratios = np.full((L, n), np.inf)
    for chunk in layer_chunks(L, 8.0 * 3 * n * n):
        block = chunk64(X[chunk])
        duplicate[chunk] = duplicate_rows(block)
        # Distances do not change under translation; centring first keeps |x|² + |y|² - 2x·y
        # from cancelling when all points share a large common component (SmolLM2's
        # middle layers: norms ~3,000, nearest-neighbour distances ~10).
        block = block - block.mean(axis=1, keepdims=True)
        squared = np.einsum("lnd,lnd->ln", block, block)
        d2 = squared[:, :, None] + squared[:, None, :] - 2.0 * block @ np.swapaxes(block, 1, 2)
        np.maximum(d2, 0.0, out=d2)
        d2[:, np.arange(n), np.arange(n)] = np.inf
        if duplicate[chunk].any():
            d2[np.broadcast_to(duplicate[chunk][:, None, :], d2.shape)] = np.inf  # a dropped point is nobody's neighbour
        nearest = np.partition(d2, 1, axis=-1)[..., :2]  # [l, N, 2] squared r1, r2
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = np.sqrt(nearest[..., 1] / nearest[..., 0])
        ratios[chunk] = np.where(duplicate[chunk] | ~np.isfinite(mu), np.inf, mu)
    # Distinct points per layer (a distance that rounds to 0 between two distinct points also drops one).
    kept = np.isfinite(ratios).sum(axis=1)
    mu_sorted = np.sort(ratios, axis=1)  # dropped points (inf) last
    rank = np.arange(1, n + 1)[None, :]
    used = rank <= np.floor((1 - discard_fraction) * kept)[:, None]
    used &= rank < kept[:, None]  # F = 1 at the largest ratio: -log(0) is undefined
    x = np.log(np.where(used, mu_sorted, 1.0))
    y = -np.log1p(-np.where(used, rank / np.maximum(kept, 1)[:, None], 0.0))
    denominator = (x * x).sum(axis=1)
    dimension = np.divide((x * y).sum(axis=1), denominator, out=np.full(L, np.nan), where=(kept >= 3) & (denominator > 0))
    warn_undefined("intrinsic_dimension", int((kept < 3).sum()), L, "layers have fewer than 3 distinct points; their dimension is NaN")
    return per_layer(dimension, stacked)


def mean_curvature(token_matrices: Sequence[Any]) -> float | np.ndarray:
    """:func:`curvature` averaged over prompts, each ``[T_i, D]`` (or ``[L, T_i, D]`` -> ``[L]``).

    Prompts whose curvature is undefined (T < 3) are left out of the mean and
    counted in a :class:`MetricWarning`; NaN if no prompt has a defined value.
    """
    values, lengths = per_prompt_values(curvatures, token_matrices)
    warn_undefined("curvature", int((lengths < 3).sum()), len(lengths), "prompts have fewer than 3 tokens and were skipped")
    return per_layer(nanmean_rows(values), has_layer_axis(token_matrices))
