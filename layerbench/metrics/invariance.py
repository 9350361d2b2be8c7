"""Invariance metrics: how much a layer's representation of a text survives noise in the text.

Each text comes in several augmented views (see :mod:`layerbench.data.augment`);
a layer is invariant when the views of one text stay close and distinct texts
stay apart. Inputs are ``[N, D]`` view matrices (row i of A and of B are two
views of text i) or ``[N, V, D]`` stacks, each optionally with a leading layer
axis. Arithmetic is float64.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from layerbench.metrics.arrays import array_device, chunk64, layer_chunks, namespace, per_layer, to_numpy, unit_rows, with_layer_axis
from layerbench.metrics.entropy import gram_entropy


def _paired(A: Any, B: Any, name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    A, stacked = with_layer_axis(A, 2, name, min_rows=2)
    B, stacked_b = with_layer_axis(B, 2, name, min_rows=2)
    if A.shape != B.shape or stacked != stacked_b:
        raise ValueError(f"{name}: the two views must have the same shape, got {A.shape} and {B.shape}")
    return A, B, stacked


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    peak = x.max(axis=axis, keepdims=True)
    return np.squeeze(peak, axis=axis) + np.log(np.exp(x - peak).sum(axis=axis))


def infonce(A: Any, B: Any, temperature: float = 0.1) -> float | np.ndarray:
    """Symmetric InfoNCE loss between two views ``A``, ``B`` ``[N, D]`` (or ``[L, N, D]`` -> ``[L]``), in nats.

    Rows are scaled to unit norm; logits = A Bᵀ / temperature ``[N, N]``;
    the loss is the mean of the two cross-entropies (rows: A -> B, columns:
    B -> A) with the matching pair (the diagonal) as the target.
    Lower means more invariant; log N is chance, 0 is perfect identification.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    A, B, stacked = _paired(A, B, "infonce")
    L, n, d = A.shape
    out = np.empty(L)
    for chunk in layer_chunks(L, 8.0 * (2 * n * d + 3 * n * n)):
        logits = unit_rows(chunk64(A[chunk])) @ np.swapaxes(unit_rows(chunk64(B[chunk])), 1, 2) / temperature  # [l, N, N]
        matching = np.diagonal(logits, axis1=1, axis2=2)  # [l, N]
        a_to_b = (_logsumexp(logits, axis=2) - matching).mean(axis=1)
        b_to_a = (_logsumexp(logits, axis=1) - matching).mean(axis=1)
        out[chunk] = 0.5 * (a_to_b + b_to_a)
    return per_layer(out, stacked)


def lidar(views: Any, delta: float = 1e-4) -> float | np.ndarray:
    """LiDAR (Thilak et al., 2023) of ``views`` ``[N, V, D]`` (or ``[L, N, V, D]`` -> ``[L]``): N texts, V views each.

    Each text is a class of its V views. With class means μ_i and grand mean μ:
    S_b = Σ_i (μ_i - μ)(μ_i - μ)ᵀ / (N - 1), S_w = Σ_i Σ_v (x_iv - μ_i)(x_iv - μ_i)ᵀ / (N (V - 1)) + delta·I,
    Λ = S_w^{-1/2} S_b S_w^{-1/2}; LiDAR = exp(-Σ p log p) with p = λ / Σ λ over Λ's eigenvalues λ.
    The effective rank of the directions that separate texts relative to
    the noise within a text: higher means more distinguishable structure.
    ``delta`` is in squared units of the states, so LiDAR is not scale-invariant.
    A torch tensor is computed on its device (float64; float32 on MPS).
    """
    X, stacked = with_layer_axis(views, 3, "lidar", min_rows=2, on_device=True)
    xp = namespace(X)
    L, n, v, d = X.shape
    if v < 2:
        raise ValueError(f"lidar needs at least 2 views per text, got {v}")
    out = np.empty(L)
    m = min(n, d)
    for chunk in layer_chunks(L, 8.0 * (2 * n * v * d + 3 * d * d + n * d + m * m)):
        block = chunk64(X[chunk])
        means = xp.mean(block, axis=2)  # [l, N, D]
        between = (means - xp.mean(means, axis=1, keepdims=True)) / float(np.sqrt(n - 1))  # S_b = betweenᵀ between
        within = xp.reshape(block - means[:, :, None], (block.shape[0], n * v, d))
        S_w = xp.matrix_transpose(within) @ within / (n * (v - 1)) + delta * xp.eye(d, dtype=block.dtype, device=array_device(block))
        # Λ = S_w^{-1/2} S_b S_w^{-1/2} has the non-zero eigenvalues of Mᵀ M with
        # M = R⁻¹ betweenᵀ and S_w = R Rᵀ (Cholesky): no D×D eigendecomposition,
        # and only an N×N one when the N texts are fewer than the D dimensions.
        R = xp.linalg.cholesky(S_w)
        M = xp.linalg.solve(R, xp.matrix_transpose(between))  # [l, D, N]
        gram = xp.matrix_transpose(M) @ M if n <= d else M @ xp.matrix_transpose(M)
        out[chunk] = np.exp(to_numpy(gram_entropy(gram, 1.0)))  # p = λ / Σλ, the same normalization as any Gram entropy
    return per_layer(out, stacked)


def dime(A: Any, B: Any, alpha: float = 1.0, n_permutations: int = 10, seed: int = 0) -> float | np.ndarray:
    """DiME (Skean et al., 2023): matrix-based mutual information between two views ``[N, D]`` (or ``[L, N, D]`` -> ``[L]``), in nats.

    K_A = A Aᵀ and K_B = B Bᵀ are N×N Gram matrices of the unit-norm rows
    (always sample Gram matrices, never D×D covariances: the Hadamard
    product pairs text i's two views). With H the matrix entropy of a
    trace-normalized PSD matrix and P seeded random permutations,
    DiME = mean_P H(K_A ∘ P K_B Pᵀ) - H(K_A ∘ K_B): how much more joint
    entropy mismatched pairs have than matched ones. Higher means the views
    share more information. The same ``n_permutations`` permutations from
    ``seed`` are used for every layer.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    A, B, stacked = _paired(A, B, "dime")
    L, n, d = A.shape
    rng = np.random.default_rng(seed)
    permutations = np.stack([rng.permutation(n) for _ in range(n_permutations)])  # [P, N]
    out = np.empty(L)
    for chunk in layer_chunks(L, 8.0 * (2 * n * d + 6 * n * n)):
        Ua, Ub = unit_rows(chunk64(A[chunk])), unit_rows(chunk64(B[chunk]))
        K_a = Ua @ np.swapaxes(Ua, 1, 2)  # [l, N, N]
        K_b = Ub @ np.swapaxes(Ub, 1, 2)
        joint = gram_entropy(K_a * K_b, alpha)  # [l]
        # One permutation at a time, batched over the chunk's layers: a [l, P, N, N]
        # stack measured 20% slower (its temporaries fall out of the caches).
        mismatched = sum(gram_entropy(K_a * K_b[:, p[:, None], p[None, :]], alpha) for p in permutations)  # P K_B Pᵀ
        out[chunk] = mismatched / n_permutations - joint
    return per_layer(out, stacked)
