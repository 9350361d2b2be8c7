"""Representational similarity of two sets of states of the same N texts: linear CKA, mutual k-NN alignment, CKNNA.

Each measure compares ``X`` ``[N, D1]`` and ``Y`` ``[N, D2]`` (rows are the same texts in the same order; the widths may
differ) and returns a float, 1 for representations that agree up to the measure's invariances. The ``*_matrix`` forms
compare every layer of one stack ``[A, N, D1]`` with every layer of another ``[B, N, D2]`` and return ``[A, B]``, from
per-layer summaries computed once (U-centred Gram matrices, k-NN lists), so a model's layer x layer map costs A Gram
matrices and one matrix product, not A x B measures. Arithmetic is float64.

Sources: the unbiased HSIC estimator of Song et al. 2012 (JMLR 13, eq. 5), CKA of Kornblith et al. 2019, mutual k-NN
and CKNNA of Huh et al. 2024 (minyoungg/platonic-rep ``metrics.py``, whose formulas the tests re-implement).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from layerbench.metrics.arrays import to_numpy, unit_rows


def _rows64(X: Any) -> np.ndarray:
    return np.asarray(to_numpy(X), dtype=np.float64)


def hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC of two ``[N, N]`` kernel matrices (N >= 4), as written (no symmetry assumed).

    With K~, L~ the matrices with their diagonals set to 0 and 1 the ones vector:
    HSIC_1 = [tr(K~ L~) + (1'K~1)(1'L~1) / ((N-1)(N-2)) - 2/(N-2) 1'K~L~1] / (N(N-3)).
    """
    n = K.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 items, got {n}")
    Kt, Lt = np.array(K, dtype=np.float64), np.array(L, dtype=np.float64)
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    value = np.sum(Kt * Lt.T) + Kt.sum() * Lt.sum() / ((n - 1) * (n - 2)) - 2.0 * np.sum(Kt @ Lt) / (n - 2)
    return float(value / (n * (n - 3)))


def hsic_biased(K: np.ndarray, L: np.ndarray) -> float:
    """The biased HSIC of the original CKA: tr(K H L H) / (N-1)², with H = I - 11'/N the centring matrix."""
    n = K.shape[0]
    H = np.eye(n) - 1.0 / n
    return float(np.trace(K @ H @ L @ H) / (n - 1) ** 2)


def u_center(K: np.ndarray) -> np.ndarray:
    """The U-centring of a symmetric kernel matrix ``[N, N]`` (Székely and Rizzo 2014): zero on the diagonal and, for i != j,
    K_ij - r_i/(N-2) - r_j/(N-2) + s/((N-1)(N-2)), with r the row sums of K~ (K, diagonal zeroed) and s their total. Then
    ⟨U(K), U(L)⟩ / (N(N-3)) is the unbiased HSIC of K and L (:func:`hsic_unbiased`), so one matrix per layer gives every
    pair's HSIC as an inner product. A new array; ``K`` is left as it is."""
    n = K.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 items, got {n}")
    U = np.array(K, dtype=np.float64)
    np.fill_diagonal(U, 0.0)
    rows = U.sum(axis=1)
    U -= rows[:, None] / (n - 2)
    U -= rows[None, :] / (n - 2)
    U += rows.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(U, 0.0)
    return U


def double_center(K: np.ndarray) -> np.ndarray:
    """H K H ``[N, N]`` with H = I - 11'/N: ⟨HKH, HLH⟩ / (N-1)² is the biased HSIC (:func:`hsic_biased`)."""
    K = np.asarray(K, dtype=np.float64)
    return K - K.mean(axis=0) - K.mean(axis=1)[:, None] + K.mean()


def u_centered_gram(X: Any) -> np.ndarray:
    """The U-centred linear Gram matrix ``[N, N]`` of ``X`` ``[N, D]``: :func:`u_center` of XX'."""
    X = _rows64(X)
    return u_center(X @ X.T)


def cka_of_grams(grams_a: list[np.ndarray], grams_b: list[np.ndarray] | None = None, unbiased: bool = True) -> np.ndarray:
    """Linear CKA of every pair of layers given their linear Gram matrices XX' ``[N, N]`` (``grams_b`` None: ``grams_a``
    against itself): ``[A, B]``, the cosine of the centred matrices (:func:`u_center` or :func:`double_center`)."""
    F = _centred_rows(grams_a, unbiased)
    return _cosine_matrix(F, F if grams_b is None else _centred_rows(grams_b, unbiased))


def cka_of_gram_pairs(grams: list[np.ndarray], pairs: list[tuple[int, int]], unbiased: bool = True) -> np.ndarray:
    """Linear CKA of the (a, b) pairs of layers only, from their linear Gram matrices ``[N, N]``: ``[len(pairs)]`` (what a
    curve needs, without the whole map of :func:`cka_of_grams`)."""
    F = _centred_rows(grams, unbiased)
    norms = [np.sqrt(row @ row) for row in F]
    return np.array([F[a] @ F[b] / (norms[a] * norms[b]) if norms[a] * norms[b] > 0 else np.nan for a, b in pairs])


def _centred_rows(grams: list[np.ndarray], unbiased: bool) -> np.ndarray:
    """``[len(grams), N²]``: each Gram matrix centred (:func:`u_center` or :func:`double_center`) and flattened."""
    center = u_center if unbiased else double_center
    F = np.empty((len(grams), grams[0].size))
    for a, K in enumerate(grams):
        F[a] = center(K).ravel()
    return F


def _cosine_matrix(F: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``[A, B]``: ⟨F_a, G_b⟩ / (||F_a|| ||G_b||) of flattened summaries (NaN where a norm is 0, a constant layer)."""
    inner = F @ G.T
    norms = np.sqrt(np.einsum("ij,ij->i", F, F))[:, None] * np.sqrt(np.einsum("ij,ij->i", G, G))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, inner / np.where(norms > 0, norms, 1.0), np.nan)


def linear_cka(X: Any, Y: Any, unbiased: bool = True) -> float:
    """Linear CKA of ``X`` ``[N, D1]`` and ``Y`` ``[N, D2]``: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = XX', L = YY'.

    ``unbiased`` (the default): Song et al.'s unbiased HSIC (platonic-rep's ``unbiased_cka``, the one ReSi reports), which
    is near 0 for independent data at any N/D; else the biased form of Kornblith et al. 2019, which is not (two
    independent Gaussian sets of 1,000 rows in 576 dimensions give about 0.5). Invariant to rotations and isotropic
    scaling of either side; 1 for identical inputs. NaN where a side is constant.
    """
    return float(cka_matrix(_rows64(X)[None], _rows64(Y)[None], unbiased)[0, 0])


def cka_matrix(Xs: Any, Ys: Any, unbiased: bool = True) -> np.ndarray:
    """Linear CKA of every layer of ``Xs`` ``[A, N, D1]`` with every layer of ``Ys`` ``[B, N, D2]``: ``[A, B]``.

    One U-centred (or centred) Gram matrix per layer (:func:`u_centered_gram`), then CKA = cos(U_a, U_b) over their
    N² entries, ``[A, B]`` from one matrix product (:func:`cka_of_grams`). Memory: (A + B) N² float64 (31 layers of
    1,000 texts: 250 MB).
    """
    grams = [_rows64(x) @ _rows64(x).T for x in Xs]
    return cka_of_grams(grams, None if Ys is Xs else [_rows64(y) @ _rows64(y).T for y in Ys], unbiased)


def knn_lists(X: Any, k: int = 10) -> np.ndarray:
    """Each row's k nearest other rows ``[N, k]`` (int, in no particular order) by cosine similarity: the rows L2-normalized
    as platonic-rep's ``compute_score`` does, inner products, the row itself excluded."""
    X = _rows64(X)
    n = X.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be between 1 and N - 1 = {n - 1}, got {k}")
    U = unit_rows(X)
    return _nearest_others(U @ U.T, k)


def _nearest_others(S: np.ndarray, k: int) -> np.ndarray:
    """``[N, k]``: the positions of the k largest entries of each row of the similarity matrix ``S`` ``[N, N]``, its
    diagonal (the row itself) excluded; ``S`` is left as it is."""
    S = S.copy()
    np.fill_diagonal(S, -np.inf)
    return np.argpartition(-S, k - 1, axis=1)[:, :k]


def _membership(lists: np.ndarray) -> np.ndarray:
    """``[N, N]`` bool from neighbour lists ``[N, k]``: entry (i, j) is whether j is among i's neighbours."""
    n = lists.shape[0]
    member = np.zeros((n, n), dtype=bool)
    member[np.arange(n)[:, None], lists] = True
    return member


def knn_agreements(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Per row, |A_i ∩ B_i| / k for two neighbour lists ``[N, k]`` of the same rows: ``[N]``; their mean is the mutual
    k-NN alignment (:func:`mutual_knn`), and their spread its standard error."""
    n, k = A.shape
    return _membership(A)[np.arange(n)[:, None], B].sum(axis=1) / k


def mutual_knn(X: Any, Y: Any, k: int = 10) -> float:
    """Mutual k-NN alignment (Huh et al. 2024): the mean over rows of |kNN_X(i) ∩ kNN_Y(i)| / k, in [0, 1]; about k/(N-1)
    for unrelated representations, 1 when both sides have the same neighbourhoods."""
    return float(mutual_knn_matrix(knn_lists(X, k)[None], knn_lists(Y, k)[None])[0, 0])


def mutual_knn_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Mutual k-NN alignment of every pair of stored k-NN lists: ``A`` ``[La, N, k]``, ``B`` ``[Lb, N, k]`` -> ``[La, Lb]``.

    Lists are what a model's run stores per layer (N x k integers), so a later model is compared with it without
    recapturing it."""
    La, n, k = A.shape
    out = np.empty((La, B.shape[0]))
    rows = np.arange(n)[None, :, None]
    for a in range(La):
        out[a] = _membership(A[a])[rows, B].sum(axis=(1, 2)) / (n * k)
    return out


def cknna(X: Any, Y: Any, k: int = 10) -> float:
    """CKNNA (Huh et al. 2024): CKA restricted to the pairs that are mutual k nearest neighbours on both sides.

    With K, L the Gram matrices of the L2-normalized rows and M_ij = 1 where j is among i's k nearest others under both:
    S(K, L) = HSIC_1(M∘K, M∘L) (:func:`hsic_unbiased`), and CKNNA = S(K, L) / sqrt(S(K, K) S(L, L)), each S with the mask
    of its own pair (for S(K, K) the k-NN mask of K alone), as platonic-rep's ``cknna`` computes it.
    """
    U, V = unit_rows(_rows64(X)), unit_rows(_rows64(Y))
    K, L = U @ U.T, V @ V.T
    mask_K, mask_L = _knn_mask(K, k), _knn_mask(L, k)
    both = mask_K & mask_L
    kl = hsic_unbiased(both * K, both * L)
    kk, ll = hsic_unbiased(mask_K * K, mask_K * K), hsic_unbiased(mask_L * L, mask_L * L)
    return float(kl / np.sqrt(kk * ll)) if kk * ll > 0 else float("nan")


def _knn_mask(K: np.ndarray, k: int) -> np.ndarray:
    """``[N, N]`` bool: j is among the k largest K_ij of row i, j != i."""
    return _membership(_nearest_others(K, k))


@dataclass(frozen=True)
class GramSketch:
    """One layer's centred Gram matrix ``[N, N]`` kept as its ``r`` eigenpairs of largest magnitude: what a model's run
    stores so that a later model's layers (or a later checkpoint's) are compared with it by CKA without recapturing it.

    U ≈ Û = V diag(λ) V' (V ``[N, r]``, stored at float16; λ ``[r]``), with the exact ``norm`` = ||U||_F and ``residual`` =
    ε = ||U - Û||_F / ||U||_F (the share of the matrix left out; float16 rounding of V is not in it).
    """

    vectors: np.ndarray
    values: np.ndarray
    norm: float
    residual: float


def sketch_gram(X: Any, rank: int = 128, unbiased: bool = True) -> GramSketch:
    """The :class:`GramSketch` of ``X`` ``[N, D]``: the U-centred (or doubly centred) linear Gram matrix's ``rank`` eigenpairs
    of largest |λ| (``numpy.linalg.eigh``), V at float16."""
    X = _rows64(X)
    U = (u_center if unbiased else double_center)(X @ X.T)
    values, vectors = np.linalg.eigh(U)
    keep = np.argsort(-np.abs(values))[: min(rank, len(values))]
    total = float(np.sqrt(np.sum(values**2)))
    left = float(np.sqrt(max(np.sum(values**2) - np.sum(values[keep] ** 2), 0.0)))
    return GramSketch(vectors[:, keep].astype(np.float16), values[keep], total, left / total if total > 0 else 0.0)


def sketch_inner(A: list[GramSketch], B: list[GramSketch], rows: np.ndarray | None = None, rows_b: np.ndarray | None = None) -> np.ndarray:
    """``[La, Lb]``: ⟨Û_a, Û_b⟩ = Σ_ij λ_ai λ_bj (v_ai' v_bj)² of every pair of sketched layers, from one matrix product of the
    stacked vectors. ``rows``: the texts (positions) both sides are restricted to (Û[rows, rows], a half of the texts);
    ``rows_b``: B's texts in another order (a shuffle, for a null), A's in ``rows``' order or their own."""
    def stacked(sketches: list[GramSketch], where: np.ndarray | None) -> np.ndarray:
        V = np.concatenate([s.vectors for s in sketches], axis=1).astype(np.float64)  # [N, L * r]
        return V if where is None else V[where]

    Va, Vb = stacked(A, rows), stacked(B, rows if rows_b is None else rows_b)
    overlap = (Va.T @ Vb) ** 2  # [La * ra, Lb * rb]
    ra, rb = A[0].vectors.shape[1], B[0].vectors.shape[1]
    if any(s.vectors.shape[1] != ra for s in A) or any(s.vectors.shape[1] != rb for s in B):
        raise ValueError("the sketches of one model must share their rank")
    la, lb = np.stack([s.values for s in A]), np.stack([s.values for s in B])  # [La, ra], [Lb, rb]
    return np.einsum("ar,arbs,bs->ab", la, overlap.reshape(len(A), ra, len(B), rb), lb)


def cka_of_sketches(A: list[GramSketch], B: list[GramSketch], rows_b: np.ndarray | None = None, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Linear CKA of every pair of sketched layers, and a bound on its error: ``([La, Lb], [La, Lb])``.

    The value is the CKA of the sketches themselves, cos(Û_a, Û_b) = ⟨Û_a, Û_b⟩ / (||Û_a|| ||Û_b||) (:func:`sketch_inner`),
    so a layer against its own sketch gives 1 exactly, as the full CKA does. Û is U's best rank-r part and U - Û is
    orthogonal to it, so the angle between U and Û is arcsin(ε); angles obey the triangle inequality and the cosine is
    1-Lipschitz in the angle, hence |cos(Û_a, Û_b) - CKA(U_a, U_b)| ≤ arcsin ε_a + arcsin ε_b, the bound returned (float16
    rounding of the vectors aside, measured in the tests). Measured on the four committed models' layers (1,000 texts,
    r = 128): at most 0.037 off, mean 0.011, where the bound says 0.35-0.65 (the left-out tails are nearly orthogonal).
    ``rows_b``: B's texts in another order (a seeded shuffle gives the null); ``rows``: both restricted to these texts
    (Û[rows, rows], not centred again: one half of a jackknife).
    """
    inner = sketch_inner(A, B, rows=rows, rows_b=rows_b)
    square_a = np.maximum(np.diag(sketch_inner(A, A, rows=rows)), 0.0)
    square_b = np.maximum(np.diag(sketch_inner(B, B, rows=rows)), 0.0) if B is not A else square_a
    scale = np.sqrt(square_a[:, None] * square_b[None, :])  # sqrt(x * x) is x exactly: a sketch against itself gives 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(scale > 0, inner / np.where(scale > 0, scale, 1.0), np.nan)
    angle = np.arcsin(np.clip([s.residual for s in A], 0, 1))[:, None] + np.arcsin(np.clip([s.residual for s in B], 0, 1))[None, :]
    return value, angle
