"""Representational similarity measures (layerbench/metrics/similarity.py): closed forms, and equality with a few-line
re-implementation of minyoungg/platonic-rep's metrics.py (at dcd76ba) in torch on random data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerbench.metrics.similarity import (
    cka_matrix,
    cknna,
    hsic_biased,
    hsic_unbiased,
    knn_lists,
    linear_cka,
    mutual_knn,
    mutual_knn_matrix,
    u_centered_gram,
)

# --- platonic-rep's formulas, as written (metrics.py), less their +1e-6 guard in the denominators -----------------------


def _their_hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    m = K.shape[0]
    K_tilde, L_tilde = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    value = (torch.sum(K_tilde * L_tilde.T) + torch.sum(K_tilde) * torch.sum(L_tilde) / ((m - 1) * (m - 2))
             - 2 * torch.sum(torch.mm(K_tilde, L_tilde)) / (m - 2))
    return value / (m * (m - 3))


def _their_hsic_biased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    H = torch.eye(K.shape[0], dtype=K.dtype) - 1 / K.shape[0]
    return torch.trace(K @ H @ L @ H)


def _their_cka(A: torch.Tensor, B: torch.Tensor, unbiased: bool) -> float:
    K, L = A @ A.T, B @ B.T
    hsic = _their_hsic_unbiased if unbiased else _their_hsic_biased
    return (hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L))).item()


def _their_knn(feats: torch.Tensor, topk: int) -> torch.Tensor:
    return (feats @ feats.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :topk]


def _their_mutual_knn(A: torch.Tensor, B: torch.Tensor, topk: int) -> float:
    A, B = F.normalize(A, p=2, dim=-1), F.normalize(B, p=2, dim=-1)  # measure_alignment.compute_score(normalize=True)
    knn_A, knn_B = _their_knn(A, topk), _their_knn(B, topk)
    n = knn_A.shape[0]
    rows = torch.arange(n).unsqueeze(1)
    lvm, llm = torch.zeros(n, n, dtype=A.dtype), torch.zeros(n, n, dtype=A.dtype)
    lvm[rows, knn_A], llm[rows, knn_B] = 1.0, 1.0
    return ((lvm * llm).sum(dim=1) / topk).mean().item()


def _their_cknna(A: torch.Tensor, B: torch.Tensor, topk: int) -> float:
    A, B = F.normalize(A, p=2, dim=-1), F.normalize(B, p=2, dim=-1)
    n = A.shape[0]
    K, L = A @ A.T, B @ B.T

    def similarity(K, L):
        _, top_K = torch.topk(K.clone().fill_diagonal_(float("-inf")), topk, dim=1)
        _, top_L = torch.topk(L.clone().fill_diagonal_(float("-inf")), topk, dim=1)
        mask = torch.zeros(n, n, dtype=A.dtype).scatter_(1, top_K, 1) * torch.zeros(n, n, dtype=A.dtype).scatter_(1, top_L, 1)
        return _their_hsic_unbiased(mask * K, mask * L)

    return (similarity(K, L) / torch.sqrt(similarity(K, K) * similarity(L, L))).item()


def _related(seed: int, n: int = 120, d1: int = 48, d2: int = 40, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two representations of the same n items that share a 16-dimensional signal (so every measure is well inside (0, 1))."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 16))
    return z @ rng.normal(size=(16, d1)) + noise * rng.normal(size=(n, d1)), z @ rng.normal(size=(16, d2)) + noise * rng.normal(size=(n, d2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_measure_equals_platonic_reps_formula_on_random_data(seed):
    X, Y = _related(seed)
    tx, ty = torch.tensor(X), torch.tensor(Y)
    for unbiased in (True, False):
        assert linear_cka(X, Y, unbiased) == pytest.approx(_their_cka(tx, ty, unbiased), abs=1e-6)
    assert mutual_knn(X, Y, 10) == pytest.approx(_their_mutual_knn(tx, ty, 10), abs=1e-6)
    assert cknna(X, Y, 10) == pytest.approx(_their_cknna(tx, ty, 10), abs=1e-6)
    K, L = X @ X.T, Y @ Y.T
    assert hsic_unbiased(K, L) == pytest.approx(_their_hsic_unbiased(torch.tensor(K), torch.tensor(L)).item(), rel=1e-9)
    assert hsic_biased(K, L) * (len(X) - 1) ** 2 == pytest.approx(_their_hsic_biased(torch.tensor(K), torch.tensor(L)).item(), rel=1e-9)
    # The U-centred Gram matrices give the same unbiased HSIC as the literal formula.
    n = len(X)
    assert np.sum(u_centered_gram(X) * u_centered_gram(Y)) / (n * (n - 3)) == pytest.approx(hsic_unbiased(K, L), rel=1e-9)


def test_cka_is_invariant_to_rotation_and_isotropic_scaling_and_is_one_on_identical_inputs():
    X, Y = _related(3)
    Q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(X.shape[1], X.shape[1])))
    for unbiased in (True, False):
        assert linear_cka(X, X @ Q, unbiased) == pytest.approx(1.0, abs=1e-12)
        assert linear_cka(X, 3.7 * X, unbiased) == pytest.approx(1.0, abs=1e-12)
        assert linear_cka(X, Y, unbiased) == pytest.approx(linear_cka(X @ Q, 0.2 * Y, unbiased), abs=1e-12)
    assert mutual_knn(X, X, 10) == 1.0 and cknna(X, X, 10) == pytest.approx(1.0, abs=1e-12)
    assert mutual_knn(X, 5.0 * X @ Q, 10) == 1.0  # cosine neighbourhoods survive rotation and scaling


def test_independent_gaussian_data_give_unbiased_cka_near_zero_and_biased_cka_far_from_it():
    """At N = 1,000 texts in 576 dimensions (SmolLM2's width): the unbiased estimator is within 0.02 of the true 0;
    the biased one is not, which is why it is only an option."""
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(1000, 576)), rng.normal(size=(1000, 576))
    assert abs(linear_cka(X, Y)) < 0.02
    assert linear_cka(X, Y, unbiased=False) > 0.3
    assert mutual_knn(X, Y, 10) < 0.03  # chance: k / (N - 1) = 0.01


def test_a_layer_map_of_a_stack_against_itself_is_symmetric_with_ones_on_the_diagonal_and_equals_pairwise_measures():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(80, 8))
    stack = np.stack([z @ rng.normal(size=(8, 24)) + s * rng.normal(size=(80, 24)) for s in (0.1, 0.5, 1.0, 3.0)])  # [4, 80, 24]
    for unbiased in (True, False):
        M = cka_matrix(stack, stack, unbiased)
        assert M.shape == (4, 4) and np.allclose(M, M.T, atol=1e-12) and np.allclose(np.diag(M), 1.0, atol=1e-12)
        assert M[0, 1] == pytest.approx(linear_cka(stack[0], stack[1], unbiased), abs=1e-12)
    other = stack[:2, :, :10]
    assert cka_matrix(stack, other).shape == (4, 2)
    lists = np.stack([knn_lists(layer, 5) for layer in stack])
    K = mutual_knn_matrix(lists, lists)
    assert np.allclose(np.diag(K), 1.0) and np.allclose(K, K.T)
    assert K[1, 3] == pytest.approx(mutual_knn(stack[1], stack[3], 5))


def test_bad_inputs_say_what_is_wrong():
    X = np.ones((3, 4))
    with pytest.raises(ValueError, match="at least 4 items"):
        linear_cka(X, X)
    with pytest.raises(ValueError, match="k must be between 1 and N - 1"):
        mutual_knn(np.eye(5), np.eye(5), 5)
    assert np.isnan(linear_cka(np.ones((6, 3)), np.eye(6)[:, :3]))  # a constant side has no similarity to speak of


def test_a_gram_sketch_gives_cka_within_its_stated_bound_and_exactly_at_full_rank():
    """A later model is compared with a stored layer's sketch: its r largest eigenpairs (float16 vectors) and exact norm.
    At full rank only float16 rounding is left; at low rank the error stays within arcsin of the two residuals, summed."""
    from layerbench.metrics.similarity import cka_of_sketches, sketch_gram

    rng = np.random.default_rng(7)
    z = rng.normal(size=(60, 6))
    stack = np.stack([z @ rng.normal(size=(6, 20)) + s * rng.normal(size=(60, 20)) for s in (0.2, 1.0, 2.0)])
    exact = cka_matrix(stack, stack)
    full, _ = cka_of_sketches([sketch_gram(x, 60) for x in stack], [sketch_gram(x, 60) for x in stack])
    assert np.allclose(np.diag(full), 1.0)  # a layer against its own sketch: 1, as the full CKA
    assert np.abs(full - exact).max() < 2e-3  # float16 vectors
    sketches = [sketch_gram(x, 4) for x in stack]
    assert all(0 < s.residual < 1 for s in sketches) and sketches[0].vectors.dtype == np.float16
    value, bound = cka_of_sketches(sketches, sketches)
    assert (np.abs(value - exact) <= bound + 2e-3).all() and (bound > 0).all()
