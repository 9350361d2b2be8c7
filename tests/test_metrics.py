"""Label-free metrics against closed forms, invariances, independent computations and per-layer loops."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.stats import special_ortho_group

import layerbench.metrics as M
from layerbench import UserError
from layerbench.metrics import MetricWarning


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        return fn(*args, **kwargs)


# ---- independent computations -------------------------------------------------


def entropy_by_svd(X: np.ndarray, alpha: float = 1.0) -> float:
    """Matrix entropy from the singular values of the centred unit rows (no Gram matrix at all)."""
    Z = X - X.mean(axis=0)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    Z = np.where(norms > 0, Z / np.where(norms > 0, norms, 1), 0)
    s2 = np.linalg.svd(Z, compute_uv=False) ** 2
    p = s2[s2 > 1e-15 * s2.sum()] / s2.sum()
    return float(-(p * np.log(p)).sum()) if alpha == 1 else float(np.log((p**alpha).sum()) / (1 - alpha))


def twonn_by_kdtree(X: np.ndarray, discard_fraction: float = 0.1) -> float:
    """TwoNN written plainly: unique points, a k-d tree for neighbours, a line fit through the origin."""
    X = np.unique(X, axis=0)
    distances, _ = cKDTree(X).query(X, k=3)
    mu = np.sort(distances[:, 2] / distances[:, 1])
    n = len(mu)
    keep = int(np.floor((1 - discard_fraction) * n))
    keep = min(keep, n - 1)
    x = np.log(mu[:keep])
    y = -np.log(1 - np.arange(1, keep + 1) / n)
    return float((x @ y) / (x @ x))


def naive_anisotropy(X: np.ndarray) -> float:
    n, total = len(X), 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                ni, nj = np.linalg.norm(X[i]), np.linalg.norm(X[j])
                total += 0.0 if ni == 0 or nj == 0 else X[i] @ X[j] / (ni * nj)
    return total / (n * (n - 1))


def naive_infonce(A: np.ndarray, B: np.ndarray, temperature: float) -> float:
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    logits = A @ B.T / temperature
    rows = [np.log(np.exp(logits[i]).sum()) - logits[i, i] for i in range(len(A))]
    cols = [np.log(np.exp(logits[:, i]).sum()) - logits[i, i] for i in range(len(A))]
    return 0.5 * (np.mean(rows) + np.mean(cols))


def naive_dime(A: np.ndarray, B: np.ndarray, n_permutations: int, seed: int) -> float:
    def H(K):
        lam = np.clip(np.linalg.eigvalsh(K / np.trace(K)), 0, None)
        lam = lam[lam > 0]
        return -(lam * np.log(lam)).sum()

    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    K_a, K_b = A @ A.T, B @ B.T
    generator = np.random.default_rng(seed)
    shuffled = []
    for _ in range(n_permutations):
        P = np.eye(len(A))[generator.permutation(len(A))]
        shuffled.append(H(K_a * (P @ K_b @ P.T)))
    return float(np.mean(shuffled) - H(K_a * K_b))


def naive_lidar(views: np.ndarray, delta: float) -> float:
    n, v, d = views.shape
    means = views.mean(axis=1)
    grand = means.mean(axis=0)
    S_b = sum(np.outer(m - grand, m - grand) for m in means) / (n - 1)
    S_w = sum(np.outer(x - means[i], x - means[i]) for i in range(n) for x in views[i]) / (n * (v - 1)) + delta * np.eye(d)
    s, U = np.linalg.eigh(S_w)
    root = U @ np.diag(s**-0.5) @ U.T
    lam = np.clip(np.linalg.eigvalsh(root @ S_b @ root), 0, None)
    p = lam[lam > 0] / lam.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


# ---- closed forms -------------------------------------------------------------


def test_matrix_entropy_closed_forms():
    for n in (3, 10, 16):
        rows = np.eye(16)[:n] * 2.5  # orthonormal up to scale; centring removes one direction
        for alpha in (0.5, 1.0, 2.0, 3.0):
            assert M.matrix_entropy(rows, alpha) == pytest.approx(np.log(n - 1), rel=1e-12)
    line = np.outer(rng().uniform(-3, 3, size=40), rng(1).normal(size=7))
    assert M.matrix_entropy(line) == pytest.approx(0.0, abs=1e-12)
    assert M.matrix_entropy(np.ones((5, 3))) == 0.0  # every row the same point
    assert M.dataset_entropy(np.eye(8)) == M.matrix_entropy(np.eye(8))
    assert M.dataset_entropy_normalized(np.eye(8)) == pytest.approx(np.log(7) / np.log(8))


def test_effective_rank_of_k_equal_orthogonal_directions_is_k():
    for k in (1, 3, 7):
        directions = np.linalg.qr(rng(k).normal(size=(20, k)))[0].T  # k orthonormal rows in 20-D
        X = np.vstack([directions * 3.0, -directions * 3.0])  # equal mass, mean zero
        assert M.effective_rank(X) == pytest.approx(k, rel=1e-10)


def test_curvature_closed_forms():
    line = np.linspace(0, 5, 12)[:, None] * rng().normal(size=(1, 30)) + rng(1).normal(size=30)
    assert M.curvature(line) == pytest.approx(0.0, abs=1e-12)
    for n in (3, 4, 6, 11):
        angles = 2 * np.pi * np.arange(2 * n + 1) / n
        # A regular n-gon traversed twice, rotated into 9-D.
        polygon = np.c_[np.cos(angles), np.sin(angles), np.zeros((len(angles), 7))] @ special_ortho_group.rvs(9, random_state=n)
        assert M.curvature(polygon) == pytest.approx(2 * np.pi / n, rel=1e-12)
    back_and_forth = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    assert M.curvature(back_and_forth) == pytest.approx(np.pi)


def test_intrinsic_dimension_of_known_manifolds():
    plane = rng(0).uniform(size=(2000, 2)) @ np.linalg.qr(rng(1).normal(size=(50, 2)))[0].T  # a 2-D plane in 50-D
    assert M.intrinsic_dimension(plane) == pytest.approx(2.0, abs=0.15)
    gaussian = rng(2).normal(size=(2000, 5)) @ np.linalg.qr(rng(3).normal(size=(100, 5)))[0].T  # 5-D Gaussian in 100-D
    assert M.intrinsic_dimension(gaussian) == pytest.approx(5.0, rel=0.1)


def test_anisotropy_closed_forms():
    assert M.anisotropy(np.tile(rng().normal(size=(1, 6)), (9, 1))) == pytest.approx(1.0)
    assert M.anisotropy(np.eye(5)) == pytest.approx(0.0)
    assert M.anisotropy(np.array([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(-1.0)
    assert M.mean_norm(np.array([[3.0, 4.0], [0.0, 1.0]])) == pytest.approx(3.0)


def test_infonce_closed_forms():
    n = 12
    orthonormal = np.eye(16)[:n]
    assert M.infonce(orthonormal, orthonormal, temperature=0.01) == pytest.approx(0.0, abs=1e-30)  # perfectly identified
    same = np.ones((n, 4))
    assert M.infonce(same, same) == pytest.approx(np.log(n), rel=1e-12)  # nothing tells texts apart: chance


def test_lidar_of_k_equal_separating_directions_is_k():
    d, k, c = 10, 4, 0.3
    class_means = np.vstack([np.eye(d)[:k] * 2.0, -np.eye(d)[:k] * 2.0])  # S_b has k equal eigenvalues
    noise = np.vstack([np.eye(d) * c, -np.eye(d) * c])  # 2d views whose within-class scatter is exactly isotropic
    views = class_means[:, None, :] + noise[None]
    assert M.lidar(views, delta=1e-12) == pytest.approx(k, rel=1e-9)


def test_dime_of_a_view_that_carries_no_information_is_zero():
    A = rng().normal(size=(30, 8))
    constant = np.ones((30, 8))
    assert M.dime(A, constant) == pytest.approx(0.0, abs=1e-12)
    assert M.dime(A, A + 0.05 * rng(1).normal(size=A.shape)) > 0.3  # near-identical views share a lot


# ---- independent computations -------------------------------------------------


@pytest.mark.parametrize("shape", [(30, 50), (80, 12), (40, 40)])  # the N×N branch, the D×D branch, both equal
@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_matrix_entropy_against_svd(shape, alpha):
    X = rng(shape[0]).normal(size=shape) @ np.diag(np.linspace(0.1, 3, shape[1])) + 1.0
    assert M.matrix_entropy(X, alpha) == pytest.approx(entropy_by_svd(X, alpha), rel=1e-9)


def test_the_n_by_n_and_d_by_d_gram_branches_agree():
    for shape in ((25, 40), (60, 20)):
        X = rng(shape[0]).normal(size=shape)
        Z = X - X.mean(axis=0)
        Z /= np.linalg.norm(Z, axis=1, keepdims=True)
        assert M.gram_entropy(Z @ Z.T) == pytest.approx(M.gram_entropy(Z.T @ Z), rel=1e-10)
        assert M.matrix_entropy(X) == pytest.approx(M.gram_entropy(Z @ Z.T), rel=1e-10)


def test_intrinsic_dimension_against_a_kdtree():
    for seed, shape in ((0, (500, 3)), (1, (800, 12)), (2, (300, 40))):
        X = rng(seed).normal(size=shape) ** 3  # not Gaussian: the estimate is not just the ambient dimension
        assert M.intrinsic_dimension(X) == pytest.approx(twonn_by_kdtree(X), rel=1e-8)


def test_duplicates_are_dropped_before_twonn():
    X = rng().normal(size=(300, 4))
    doubled = np.vstack([X, X[:50], -0.0 + X[10:20]])
    assert M.intrinsic_dimension(doubled) == pytest.approx(M.intrinsic_dimension(X), rel=1e-12)
    with pytest.warns(MetricWarning, match="fewer than 3 distinct points"):
        assert np.isnan(M.intrinsic_dimension(np.vstack([X[:2]] * 5)))


def test_anisotropy_infonce_dime_lidar_against_plain_loops():
    X = rng(0).normal(size=(12, 7))
    X[3] = 0.0
    assert M.anisotropy(X) == pytest.approx(naive_anisotropy(X), abs=1e-12)
    A = rng(1).normal(size=(20, 6))
    B = A + 0.5 * rng(2).normal(size=A.shape)
    assert M.infonce(A, B, 0.2) == pytest.approx(naive_infonce(A, B, 0.2), rel=1e-10)
    assert M.dime(A, B, n_permutations=4, seed=7) == pytest.approx(naive_dime(A, B, 4, 7), rel=1e-9)
    views = rng(3).normal(size=(15, 4, 6)) + rng(4).normal(size=(15, 1, 6)) * 3
    assert M.lidar(views, 1e-3) == pytest.approx(naive_lidar(views, 1e-3), rel=1e-9)


def test_prompt_entropy_is_the_mean_of_matrix_entropies_and_skips_short_prompts():
    prompts = [rng(t).normal(size=(t, 16)) for t in (5, 1, 9, 2, 30)]
    with pytest.warns(MetricWarning, match="1 of 5 prompts have fewer than 2 tokens"):
        value = M.prompt_entropy(prompts)
    assert value == pytest.approx(np.mean([M.matrix_entropy(p) for p in prompts if len(p) >= 2]), rel=1e-12)
    normalized = quiet(M.prompt_entropy, prompts, normalize=True)
    expected = np.mean([M.matrix_entropy(p) / np.log(min(len(p), 16)) for p in prompts if len(p) >= 2])
    assert normalized == pytest.approx(expected, rel=1e-12)


def test_padded_kernels_equal_single_prompt_values():
    lengths = np.array([7, 3, 12, 1, 2])
    hidden = rng().normal(size=(3, 5, 12, 10))
    hidden[:, np.arange(12)[None, :] >= lengths[:, None]] = 1e6  # padding: must not leak in
    entropies = M.prompt_entropies(hidden, lengths)
    angles = M.curvatures(hidden, lengths)
    for b, t in enumerate(lengths):
        tokens = hidden[:, b, :t]
        if t >= 2:
            np.testing.assert_allclose(entropies[:, b], M.matrix_entropy(tokens), rtol=1e-12)
        else:
            assert np.isnan(entropies[:, b]).all()
        if t >= 3:
            np.testing.assert_allclose(angles[:, b], M.curvature(tokens), rtol=1e-12)
        else:
            assert np.isnan(angles[:, b]).all()


def test_curvature_of_too_short_prompts_is_nan_with_a_warning():
    with pytest.warns(MetricWarning, match="fewer than 3 tokens"):
        assert np.isnan(M.curvature(np.ones((2, 4))))
    with pytest.warns(MetricWarning, match="1 of 3 prompts"):
        value = M.mean_curvature([np.eye(4)[:3], np.eye(4)[:2], np.eye(4)])
    assert value == pytest.approx(np.mean([M.curvature(np.eye(4)[:3]), M.curvature(np.eye(4))]))


# ---- invariances and the layer axis --------------------------------------------

POOLED = ["mean_norm", "anisotropy", "dataset_entropy", "dataset_entropy_normalized", "effective_rank", "intrinsic_dimension"]


def all_metric_values(X: np.ndarray, prompts: list[np.ndarray], views: np.ndarray) -> dict[str, float]:
    values = {name: M.get(name).fn(X) for name in POOLED}
    values |= {name: quiet(M.get(name).fn, prompts) for name in ("prompt_entropy", "prompt_entropy_normalized", "curvature")}
    values |= {name: M.get(name).fn(views) for name in ("infonce", "dime", "lidar")}
    values["matrix_entropy_alpha2"] = M.matrix_entropy(X, 2.0)
    return values


def sample_inputs(d: int = 12):
    X = rng(0).normal(size=(60, d)) @ np.diag(np.linspace(0.2, 2, d)) + 0.7
    prompts = [rng(t).normal(size=(t, d)) for t in (4, 9, 15, 2)]
    views = rng(5).normal(size=(40, 8, d)) * 0.3 + rng(6).normal(size=(40, 1, d))
    return X, prompts, views


def test_every_metric_is_invariant_to_a_rotation_of_the_feature_space():
    X, prompts, views = sample_inputs()
    R = special_ortho_group.rvs(X.shape[1], random_state=3)
    before = all_metric_values(X, prompts, views)
    after = all_metric_values(X @ R, [p @ R for p in prompts], views @ R)
    assert set(before) >= {m.name for m in M.list_metrics()}
    for name in before:
        assert after[name] == pytest.approx(before[name], rel=1e-6, abs=1e-9), name


def test_entropies_are_invariant_to_scaling():
    X, prompts, _ = sample_inputs()
    for c in (1e-3, 7.0, 1e4):
        assert M.matrix_entropy(X * c) == pytest.approx(M.matrix_entropy(X), rel=1e-9)
        assert M.dataset_entropy_normalized(X * c) == pytest.approx(M.dataset_entropy_normalized(X), rel=1e-9)
        assert M.effective_rank(X * c) == pytest.approx(M.effective_rank(X), rel=1e-9)
        assert quiet(M.prompt_entropy, [p * c for p in prompts]) == pytest.approx(quiet(M.prompt_entropy, prompts), rel=1e-9)


def test_the_layer_axis_gives_the_per_layer_loop_in_one_call():
    d = 10
    stack = np.stack([sample_inputs(d)[0] * (l + 1) + l for l in range(4)]).astype(np.float32)  # [L, N, D]
    prompts = [rng(t).normal(size=(4, t, d)) for t in (3, 8, 1)]  # each [L, T, D]
    views = rng(9).normal(size=(4, 30, 8, d))  # [L, N, V, D]
    for name in POOLED:
        fn = M.get(name).fn
        batched = fn(stack)
        assert batched.shape == (4,), name
        np.testing.assert_allclose(batched, [fn(layer) for layer in stack], rtol=1e-10, err_msg=name)
    for name in ("prompt_entropy", "prompt_entropy_normalized", "curvature"):
        fn = M.get(name).fn
        np.testing.assert_allclose(quiet(fn, prompts), [quiet(fn, [p[l] for p in prompts]) for l in range(4)], rtol=1e-10, err_msg=name)
    for name in ("infonce", "dime", "lidar"):
        fn = M.get(name).fn
        np.testing.assert_allclose(fn(views), [fn(layer) for layer in views], rtol=1e-10, err_msg=name)


def test_torch_tensors_of_any_float_dtype_are_accepted():
    X = rng().normal(size=(3, 40, 8)).astype(np.float32)
    for name in POOLED:
        fn = M.get(name).fn
        np.testing.assert_allclose(fn(torch.from_numpy(X)), fn(X), rtol=1e-12)
        assert isinstance(fn(torch.from_numpy(X[0])), float)
    assert np.isfinite(M.matrix_entropy(torch.from_numpy(X).bfloat16())).all()


def test_the_chunked_path_equals_one_call(monkeypatch):
    X = rng().normal(size=(5, 50, 9))
    whole = M.intrinsic_dimension(X), M.matrix_entropy(X), M.dime(X, X + 0.1), M.lidar(X.reshape(5, 25, 2, 9))
    import layerbench.metrics.arrays as arrays

    for module in ("entropy", "geometry", "invariance"):
        monkeypatch.setattr(f"layerbench.metrics.{module}.layer_chunks", lambda n, b, budget=1: arrays.layer_chunks(n, b, 1))  # one layer per chunk
    chunked = M.intrinsic_dimension(X), M.matrix_entropy(X), M.dime(X, X + 0.1), M.lidar(X.reshape(5, 25, 2, 9))
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-12)


# ---- determinism, bad input, the registry --------------------------------------


def test_dime_is_deterministic_given_the_seed():
    A, B = rng(0).normal(size=(25, 5)), rng(1).normal(size=(25, 5))
    assert M.dime(A, B, seed=3) == M.dime(A, B, seed=3)
    assert M.dime(A, B, seed=3) != M.dime(A, B, seed=4)


def test_bad_shapes_and_arguments_are_value_errors():
    with pytest.raises(ValueError, match="at least 2 rows"):
        M.anisotropy(np.ones((1, 3)))
    with pytest.raises(ValueError, match="2 dimensions, or 3 with layers first"):
        M.mean_norm(np.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        M.infonce(np.ones((4, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="at least 2 views"):
        M.lidar(np.ones((4, 1, 3)))
    with pytest.raises(ValueError, match="alpha must be positive"):
        M.matrix_entropy(np.eye(3), alpha=0)
    with pytest.raises(ValueError, match="no prompts"):
        M.prompt_entropy([])


def test_the_registry_declares_kind_direction_and_cost():
    names = {m.name for m in M.list_metrics()}
    assert names >= {"prompt_entropy", "dataset_entropy", "effective_rank", "curvature", "intrinsic_dimension", "anisotropy", "infonce", "lidar", "dime"}
    for info in M.list_metrics():
        assert info.input_kind in ("pooled", "tokens", "views") and info.cost and info.unit
        assert (info.per_prompt is not None) == (info.input_kind == "tokens")
        assert (info.n_views >= 2) == (info.input_kind == "views")
    assert M.get("infonce").higher_is_better is False and M.get("lidar").higher_is_better is True
    assert M.get("dataset_entropy").higher_is_better is None
    with pytest.raises(UserError, match="unknown metric 'entropy9'"):
        M.get("entropy9")


def test_derived_metrics_equal_their_own_functions():
    X = rng(4).normal(size=(3, 50, 20))
    for info in M.list_metrics():
        if info.derived_from is not None:
            source = M.get(info.derived_from).fn(X)
            np.testing.assert_allclose(info.derive(source, 50, 20), info.fn(X), rtol=1e-12, err_msg=info.name)


def test_duplicate_detection_survives_hash_collisions(monkeypatch):
    from layerbench.metrics import geometry

    X = rng(5).normal(size=(2, 40, 3))
    X[:, 30:] = X[:, 5:15]
    X[1, 20] = -0.0 * X[1, 0] + X[1, 0]
    expected = np.zeros((2, 40), dtype=bool)
    for layer in range(2):
        _, first = np.unique(X[layer], axis=0, return_index=True)
        expected[layer] = True
        expected[layer, first] = False
    np.testing.assert_array_equal(geometry.duplicate_rows(X), expected)
    monkeypatch.setattr(geometry, "row_hashes", lambda X: np.zeros(X.shape[:2], dtype=np.uint64))  # every row collides
    np.testing.assert_array_equal(geometry.duplicate_rows(X), expected)


def test_device_metrics_equal_numpy_within_1e_8_on_real_states(minilm):
    """--metrics-device: the metrics written once for any array namespace give numpy's numbers from torch tensors
    (on the CPU here; the same code runs on a GPU), through the suite as a run calls it."""
    from layerbench import embed_layers
    from layerbench.data import load_packaged
    from layerbench.metrics.suite import MetricPlan, evaluate_metrics

    texts = load_packaged("bbc-news", {"field": "headline"}).texts[:120]
    pooled = embed_layers(minilm, texts, cache=False)  # [7, 120, 384]
    rng = np.random.default_rng(0)
    views = (pooled[:, :40, None, :] + 0.1 * rng.standard_normal((7, 40, 8, 384))).astype(np.float32)
    plan = MetricPlan.from_names(["dataset_entropy", "dataset_entropy_normalized", "effective_rank", "anisotropy", "lidar", "mean_norm", "intrinsic_dimension"])
    host, _ = evaluate_metrics(plan, pooled, {}, views)
    torch_cpu, _ = evaluate_metrics(plan, pooled, {}, views, device="cpu")
    assert list(host.metric) == list(torch_cpu.metric)
    relative = np.abs(host.value.to_numpy() - torch_cpu.value.to_numpy()) / np.maximum(np.abs(host.value.to_numpy()), 1e-300)
    assert relative.max() < 1e-8, host.assign(relative=relative).sort_values("relative").tail(3)
    assert {m.name for m in plan.metrics if m.on_device} == {"dataset_entropy", "anisotropy", "lidar"}


@pytest.mark.parametrize("metric", [M.matrix_entropy, M.lidar, M.anisotropy])
def test_a_tensor_is_computed_in_torch_and_gives_numpy_numbers(metric, monkeypatch):
    """The torch path really runs torch (numpy's eigvalsh is not called) and equals the numpy path on closed-form-free random data."""
    import torch

    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 12, 6, 10) if metric is M.lidar else (3, 30, 20))
    expected = metric(X)
    calls = []
    real = np.linalg.eigvalsh
    monkeypatch.setattr(np.linalg, "eigvalsh", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = metric(torch.from_numpy(X))
    assert not calls and np.abs(got - expected).max() <= 1e-8 * np.abs(expected).max()


def test_device_metrics_go_to_the_device_a_slice_of_layers_at_a_time():
    """States larger than the device budget are moved in slices of layers; the values are the whole stack's."""
    from layerbench.metrics.suite import on_device

    rng = np.random.default_rng(2)
    states = rng.standard_normal((5, 30, 12)).astype(np.float32)
    seen = []

    def entropy(x):
        seen.append(x.shape[0])
        return M.matrix_entropy(x)

    sliced = on_device(entropy, states, "cpu", budget=2 * states[0].nbytes)
    assert seen == [2, 2, 1]
    np.testing.assert_allclose(sliced, M.matrix_entropy(states), rtol=1e-12)
