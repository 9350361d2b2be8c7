"""mean_norm and anisotropy against closed forms, invariances and a naive pairwise loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import special_ortho_group

from layerbench.metrics import anisotropy, get, list_metrics, mean_norm
from layerbench import UserError


def naive_anisotropy(X: np.ndarray) -> float:
    n = len(X)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                ni, nj = np.linalg.norm(X[i]), np.linalg.norm(X[j])
                total += 0.0 if ni == 0 or nj == 0 else X[i] @ X[j] / (ni * nj)
    return total / (n * (n - 1))


def test_closed_forms():
    assert anisotropy(np.eye(5)) == pytest.approx(0.0)
    assert anisotropy(np.ones((4, 3)) * np.array([[1], [2], [3], [4]])) == pytest.approx(1.0)  # rank 1, same direction
    assert anisotropy(np.array([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(-1.0)
    assert mean_norm(np.array([[3.0, 4.0], [0.0, 1.0]])) == pytest.approx(3.0)


def test_against_a_naive_loop_with_a_zero_row():
    X = np.random.default_rng(0).normal(size=(12, 7))
    X[3] = 0.0
    assert anisotropy(X) == pytest.approx(naive_anisotropy(X), abs=1e-12)


def test_invariant_to_rotation_and_per_row_scaling():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 6)) + 0.5
    R = special_ortho_group.rvs(6, random_state=2)
    scales = rng.uniform(0.1, 10, size=(20, 1))
    assert anisotropy(X @ R) == pytest.approx(anisotropy(X), abs=1e-12)
    assert anisotropy(X * scales) == pytest.approx(anisotropy(X), abs=1e-12)
    assert mean_norm(X @ R) == pytest.approx(mean_norm(X), rel=1e-12)


def test_layer_axis_is_one_batched_call_equal_to_per_layer_values():
    stack = np.random.default_rng(3).normal(size=(4, 10, 5)).astype(np.float32)
    for fn in (anisotropy, mean_norm):
        batched = fn(stack)
        assert batched.shape == (4,)
        np.testing.assert_allclose(batched, [fn(layer) for layer in stack], rtol=1e-12)
    np.testing.assert_allclose(anisotropy(torch.from_numpy(stack)), anisotropy(stack), rtol=1e-12)


def test_bad_shapes_and_the_registry():
    with pytest.raises(ValueError, match="at least 2 rows"):
        anisotropy(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"\[N, D\] or \[L, N, D\]"):
        mean_norm(np.ones(3))
    assert {m.name for m in list_metrics()} >= {"anisotropy", "mean_norm"}
    assert get("anisotropy").input_kind == "pooled"
    with pytest.raises(UserError, match="unknown metric 'entropy9'"):
        get("entropy9")
