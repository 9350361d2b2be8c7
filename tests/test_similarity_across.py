"""Layer similarity across models and checkpoints: the stored sketches, the rows of every pair, and compare's layer moves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layerbench.across_models import checkpoint_similarity, shuffled_lists, write_across_models
from layerbench.compare import format_moves, layer_moves
from layerbench.metrics.similarity import cka_matrix, knn_lists, mutual_knn, sketch_gram
from layerbench.results import load_results
from layerbench.results.manifest import Part
from layerbench.results.schema import complete_rows
from layerbench.results.sketches import complete_sketches, load_sketches, sketch_frame, texts_id
from layerbench.results.store import ResultStore


def _model(seed: int, n: int = 80, layers: int = 4, noise: float = 0.0) -> np.ndarray:
    """``[layers, n, 12]``: layer l holds factors 3l..3l+2 (the same for every seed) in a seeded orthonormal basis and
    scale, so that two seeds' layer l hold the same representation up to rotation and scale (CKA 1), other layers unrelated."""
    shared = np.random.default_rng(0).normal(size=(n, 3 * layers))
    rng = np.random.default_rng(seed)
    out = []
    for layer in range(layers):
        basis = np.linalg.qr(rng.normal(size=(12, 3)))[0].T  # [3, 12], orthonormal rows
        out.append(rng.uniform(0.5, 2) * shared[:, 3 * layer: 3 * layer + 3] @ basis + (noise + 0.01) * rng.normal(size=(n, 12)))
    return np.stack(out)


def _store(root, model: str, stack: np.ndarray, texts: str = "t", rank: int = 80, run_id: str = "r1") -> None:
    """Write ``stack``'s sketches as a similarity run of ``model`` would (Part.SKETCHES) and a score row beside them."""
    layers = list(range(len(stack)))
    frame = sketch_frame(layers, np.stack([knn_lists(x, 5) for x in stack]), [sketch_gram(x, rank) for x in stack], texts, True, None)
    store = ResultStore(root)
    store.write_task(complete_sketches(frame, model=model, revision=None, task="sim", protocol="layerbench", site="residual", n_layers=len(stack) - 1,
                                       run_id=run_id), model, None, "sim", "h", Part.SKETCHES)
    score = pd.DataFrame([{"metric": "cka_to_last", "layer": 0, "value": 1.0, "stderr": np.nan, "n": 80, "higher_is_better": None}])
    store.write_task(complete_rows(score, model=model, revision=None, task="sim", subset="all", split="all", n_layers=len(stack) - 1, run_id=run_id),
                     model, None, "sim", "h")


def test_sketches_survive_the_store_and_give_the_exact_measures_at_full_rank(tmp_path):
    stack = _model(1)
    _store(tmp_path, "a", stack)
    [found] = load_sketches(tmp_path)
    assert found.model == "a" and found.layers == [0, 1, 2, 3] and found.n_layers == 3 and found.knn.shape == (4, 80, 5)
    assert np.array_equal(found.knn[2], knn_lists(stack[2], 5))
    assert found.grams[1].vectors.dtype == np.float16 and found.grams[1].residual < 1e-6
    assert load_sketches(tmp_path, task="other") == []
    # Not result rows: load_results reads the score beside them only.
    assert set(load_results(tmp_path).metric) == {"cka_to_last"}
    assert texts_id(["x", "y"]) != texts_id(["y", "x"])


def test_rows_across_models_find_the_layer_that_holds_the_same_factors(tmp_path):
    """Two models whose layer l holds the same l + 1 factors in other bases: each layer's best match is the other's layer l
    (equal relative depth), CKA and mutual k-NN near 1 there, far above the shuffled null; the exact CKA agrees."""
    a, b = _model(1), _model(2)
    _store(tmp_path, "a", a)
    _store(tmp_path, "b", b)
    written = write_across_models(tmp_path, "sim")
    assert len(written) == 2
    rows = load_results(tmp_path)
    mine = rows[(rows.model == "a") & (rows.other_model == "b")]
    cka = mine[mine.metric == "cka"].pivot(index="layer", columns="source_layer", values="value").to_numpy(float)
    assert cka.shape == (4, 4) and np.abs(cka - cka_matrix(a, b)).max() < 2e-3  # full rank: float16 rounding only
    theirs = rows[(rows.model == "b") & (rows.other_model == "a") & (rows.metric == "cka")].pivot(index="layer", columns="source_layer", values="value")
    assert np.allclose(theirs.to_numpy(float), cka.T)
    knn = mine[mine.metric == "mutual_knn"].set_index(["layer", "source_layer"]).value
    assert knn[(2, 2)] == pytest.approx(mutual_knn(a[2], b[2], 5))
    depth = mine[mine.metric == "cka_best_match_depth"].set_index("layer").value
    assert np.allclose(depth.to_numpy(float), [0, 1 / 3, 2 / 3, 1])
    best = mine[mine.metric == "cka_best_match"].set_index("layer")
    null = mine[mine.metric == "cka_best_match_null"].set_index("layer").value
    assert (best.value > 0.95).all() and (null < 0.3).all() and best.stderr.notna().all()
    assert mine[mine.metric == "cka_best_match_depth_gap"].value.iloc[0] == pytest.approx(0.0)
    knn_best = mine[mine.metric == "mutual_knn_best_match"]
    assert (knn_best.stderr > 0).all() and (knn_best.n == 80).all()
    # Made from the same sketches: nothing to do; a model run on other texts is left out, with a reason.
    assert write_across_models(tmp_path, "sim") == []
    _store(tmp_path, "c", _model(3), texts="other texts")
    assert write_across_models(tmp_path, "sim") == []


def test_a_pairs_rows_do_not_depend_on_the_other_models_stored(tmp_path):
    """Each pair's shuffle and halves are seeded alone: adding a third model leaves the first two's rows bit for bit."""
    from layerbench.across_models import across_rows

    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        _store(tmp_path, name, _model(seed))
    a, b, c = load_sketches(tmp_path)
    two, three = across_rows([a, b], half_samples=5), across_rows([a, b, c], half_samples=5)
    mine = three[0][three[0].other_model == "b"].reset_index(drop=True)
    pd.testing.assert_frame_equal(two[0], mine)


def test_a_shuffled_list_relabels_its_neighbours():
    X = _model(1)[3]
    lists = knn_lists(X, 5)[None]
    order = np.random.default_rng(0).permutation(80)
    assert np.array_equal(np.sort(shuffled_lists(lists, order)[0], axis=1), np.sort(knn_lists(X[order], 5), axis=1))


def test_an_unchanged_checkpoint_shows_1_at_every_layer_and_a_changed_one_the_layers_it_moved(tmp_path):
    base, same, damaged = _model(1), _model(1), _model(1)
    damaged[2:] = _model(1, noise=3.0)[2:]  # the last two layers damaged
    for name, stack in (("base", base), ("same", same), ("damaged", damaged)):
        _store(tmp_path / name, "m", stack)
    [b], [s], [d] = (load_sketches(tmp_path / name) for name in ("base", "same", "damaged"))
    unchanged = checkpoint_similarity(b, s)
    assert np.allclose(unchanged[["cka", "mutual_knn"]].to_numpy(), 1.0, atol=1e-12)
    moved = checkpoint_similarity(b, d).set_index("layer")
    assert (moved.loc[[0, 1]].to_numpy() > 0.999).all() and (moved.loc[[2, 3], "cka"] < 0.9).all()
    rows = layer_moves([b], [d], tolerance=0.01)
    assert set(rows.kind) == {"diagnostic"} and set(rows.metric) == {"cka_to_base", "mutual_knn_to_base"}
    assert set(rows[rows.verdict == "changed"].layer) == {2, 3}
    text = "\n".join(format_moves(rows))
    assert "never gating" in text and "lowest CKA" in text
    assert "unchanged at every layer" in "\n".join(format_moves(layer_moves([b], [s], 0.01)))
    _store(tmp_path / "other", "m", base, texts="other texts")
    with pytest.raises(ValueError, match="other texts"):
        checkpoint_similarity(b, load_sketches(tmp_path / "other")[0])
    assert layer_moves([b], load_sketches(tmp_path / "other"), 0.01).empty
