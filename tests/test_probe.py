"""Concept-depth probing: closed forms on synthetic layers, the jin2024 protocol against scikit-learn, and SmolLM2's capitals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layerbench.data import load_task_data
from layerbench.evaluators.probe import concept_depth, cv_fold_scores, cv_probe, encode_labels, jin2024_probe, probe_layers
from layerbench.families.probe import ProbeSettings
from layerbench.specs import get_task


def synthetic_layers(n: int = 200, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three layers: pure noise, a weak signal, a perfectly separating direction."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    noise = rng.standard_normal((3, n, d))
    noise[1, :, 0] += 0.8 * (2 * y - 1)
    noise[2, :, 0] = 5 * (2 * y - 1) + 0.1 * rng.standard_normal(n)
    return noise, y


def test_noise_is_at_chance_and_a_separating_direction_is_perfect():
    layers, y = synthetic_layers()
    chance = cv_probe(layers[0], y, seed=0)
    weak = cv_probe(layers[1], y, seed=0)
    perfect = cv_probe(layers[2], y, seed=0)
    assert abs(chance["accuracy"][0] - 0.5) < 0.12 and abs(chance["auroc"][0] - 0.5) < 0.12
    assert 0.6 < weak["accuracy"][0] < 0.9
    assert perfect["accuracy"] == (1.0, 0.0) and perfect["auroc"] == (1.0, 0.0) and perfect["f1"][0] == 1.0
    assert chance["accuracy"][1] > 0  # a standard error over folds


def test_probe_is_deterministic_and_invariant_to_rotation_and_scale():
    layers, y = synthetic_layers()
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((16, 16)))
    once = cv_probe(layers[1], y, seed=3)
    assert cv_probe(layers[1], y, seed=3) == once
    # Standardization undoes a per-feature scale exactly; a rotation keeps the L2 probe's accuracy.
    scaled = cv_probe(layers[1] * np.linspace(0.5, 3, 16), y, seed=3)
    assert np.isclose(scaled["accuracy"][0], once["accuracy"][0])
    rotated = cv_probe(layers[2] @ q, y, seed=3)
    assert rotated["accuracy"][0] == 1.0


def test_jin2024_protocol_equals_a_direct_scikit_learn_computation():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    layers, y = synthetic_layers()
    X = layers[1]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.4, random_state=42)
    direct = LogisticRegression().fit(X_train, y_train)
    ours = jin2024_probe(X, y)
    assert ours["accuracy"][0] == accuracy_score(y_test, direct.predict(X_test))
    assert ours["f1"][0] == f1_score(y_test, direct.predict(X_test))
    assert ours["auroc"][0] == roc_auc_score(y_test, direct.predict_proba(X_test)[:, 1])
    assert np.isnan(ours["accuracy"][1])


def test_one_split_takes_its_standard_errors_from_resamples_of_its_test_items():
    """jin2024's single split: each layer's accuracy stderr is the binomial sqrt(p(1-p)/T) of its T test items (the
    bootstrap's closed form); a depth point a step in the curve fixes does not move, one between near-equal layers does."""
    layers, y = synthetic_layers(n=400)
    rows = probe_layers(layers, y, ProbeSettings(protocol="jin2024"))
    accuracy = rows[rows.metric == "accuracy"].set_index("layer")
    tested = round(0.4 * len(y))
    for layer in (0, 1):
        p = accuracy.value[layer]
        assert accuracy.stderr[layer] == pytest.approx(np.sqrt(p * (1 - p) / tested), rel=0.1)
    assert accuracy.stderr[2] == 0.0  # every test item right on every resample
    summary = rows[rows.layer.isna()].set_index("metric")
    assert summary.value["converging_layer"] == 2 and summary.stderr["converging_layer"] == 0.0  # 1.0 at layer 2 only, on every resample
    assert summary.stderr["peak_accuracy"] == accuracy.stderr[2]
    # Two noise layers and a weak one: where the curve converges is uncertain, and the spread says so.
    flat = np.stack([layers[0], layers[1], layers[1] + 0.05 * np.random.default_rng(2).standard_normal(layers[1].shape)])
    uncertain = probe_layers(flat, y, ProbeSettings(protocol="jin2024"), control=False).query("layer.isna()", engine="python").set_index("metric")
    assert uncertain.stderr["converging_depth"] > 0.05
    assert uncertain.stderr["converging_depth"] == pytest.approx(uncertain.stderr["converging_layer"] / 2)  # depth = layer / L, L = 2 here
    # Five folds keep their spread over folds.
    folds = probe_layers(layers, y, ProbeSettings()).query("metric == 'accuracy' and layer == 1")
    assert folds.stderr.item() == pytest.approx(np.std(cv_fold_scores(layers[1], y)["accuracy"], ddof=1) / np.sqrt(5))


@pytest.mark.parametrize(
    "accuracy, peak, jumping, converging",
    [
        ([0.5, 0.52, 0.7, 0.9, 0.91, 0.905], 4, 2, 3),  # jump at 2 (+0.18), within 0.01 of 0.91 from layer 3
        ([0.5, 0.55, 0.6, 0.65, 0.7], 4, None, 4),  # never rises by 0.1 at once
        ([0.9, 0.9, 0.9], 0, None, 0),
    ],
)
def test_concept_depth_points(accuracy, peak, jumping, converging):
    points = concept_depth(np.array(accuracy), jump_delta=0.1, converge_epsilon=0.01)
    assert points["peak_layer"] == peak and points["converging_layer"] == converging
    assert (np.isnan(points["jumping_layer"]) if jumping is None else points["jumping_layer"] == jumping)


def test_probe_rows_carry_scores_per_layer_and_the_summary():
    layers, y = synthetic_layers()
    rows = probe_layers(layers, y, ProbeSettings())
    per_layer = rows[rows.layer.notna()]
    assert set(per_layer.metric) == {"accuracy", "f1", "auroc", "control_accuracy", "selectivity"} and len(per_layer) == 15
    summary = rows[rows.layer.isna()].set_index("metric")["value"]
    assert summary["peak_layer"] == 2 and summary["peak_depth"] == 1.0 and summary["peak_accuracy"] == 1.0
    assert summary["chance_accuracy"] == 0.5 and "bow_accuracy" not in summary  # no texts given: chance is the baseline
    # selectivity is accuracy minus the control task's, split by split
    by = per_layer.set_index(["metric", "layer"]).value
    for layer in range(3):
        assert by[("selectivity", layer)] == pytest.approx(by[("accuracy", layer)] - by[("control_accuracy", layer)])
        assert abs(by[("control_accuracy", layer)] - 0.5) < 0.15  # shuffled labels: nothing to learn


def _words(n: int, rng: np.random.Generator, vocabulary: int = 300, length: int = 8) -> list[str]:
    """n texts of random made-up words: no surface feature tells anything."""
    return [" ".join(f"w{k}" for k in rng.integers(vocabulary, size=length)) for _ in range(n)]


def test_a_label_one_token_gives_away_gets_no_concept_depth_however_good_the_probe():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 200)
    texts = [t + (" yes" if label else " no") for t, label in zip(_words(400, rng), y)]
    noise = rng.standard_normal((4, 400, 16))
    rows = probe_layers(noise, y, ProbeSettings(), texts=texts)
    selectivity = rows[rows.metric == "selectivity"].value
    # States that know nothing: accuracy = control, within three standard errors of a difference of two accuracies on 400 items (0.11).
    assert len(selectivity) == 4 and selectivity.abs().max() < 0.11
    summary = rows[rows.layer.isna()].set_index("metric")
    assert summary.value["bow_accuracy"] == 1.0
    assert summary.value[["peak_depth", "jumping_depth", "converging_depth"]].isna().all()
    assert summary.note["converging_depth"].startswith("not decodable beyond the baseline")
    # Even states that carry the token perfectly place no concept: the surface already gives the label.
    planted = noise.copy()
    planted[:, :, 0] = 4 * (2 * y - 1)
    summary = probe_layers(planted, y, ProbeSettings(), texts=texts).query("layer.isna()", engine="python").set_index("metric")
    assert summary.value["peak_accuracy"] == 1.0 and np.isnan(summary.value["converging_depth"])


def test_a_direction_planted_from_one_layer_on_puts_the_jumping_point_there():
    # 4,000 items: test folds of 800, where two noise layers' accuracies differ by 0.1 (the jump threshold) only at four standard errors.
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 2000)
    states = rng.standard_normal((8, 4000, 16))
    states[5:, :, 3] += 3 * (2 * y - 1)  # decodable from layer 5
    texts = _words(4000, rng)
    rows = probe_layers(states, y, ProbeSettings(), texts=texts)
    summary = rows[rows.layer.isna()].set_index("metric")
    assert abs(summary.value["bow_accuracy"] - 0.5) < 0.1  # made-up words: the bag of words is at chance
    assert summary.value["jumping_layer"] == 5 and summary.value["converging_layer"] == 5 and summary.value["beyond_baseline"] > 0.3
    assert pd.isna(summary.note["converging_depth"])
    selectivity = rows[rows.metric == "selectivity"].set_index("layer").value
    assert selectivity[:5].abs().max() < 0.05 and selectivity[5:].min() > 0.4


def test_groups_stay_on_one_side_of_every_split():
    from layerbench.evaluators.probe import probe_splits

    y = np.tile([0, 1], 60)
    groups = np.repeat(np.arange(40), 3)
    for train, test in probe_splits(y, ProbeSettings(), seed=0, groups=groups):
        assert not set(groups[train]) & set(groups[test])


def test_multiclass_labels_use_macro_f1_and_one_vs_rest_auroc():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    X = rng.standard_normal((120, 8))
    X[np.arange(120), y] += 6  # class k lights up feature k
    scores = cv_probe(X, y)
    assert scores["accuracy"][0] == 1.0 and scores["f1"][0] == 1.0 and scores["auroc"][0] == 1.0
    assert list(encode_labels(["b", "a", "c"], None)) == [1, 0, 2]


@pytest.mark.slow
def test_smollm2_capital_probe_is_at_chance_at_the_embeddings_and_above_0_7_at_its_best(smollm):
    from layerbench import CaptureRequest, capture_layers

    spec = get_task("concept-capitals")
    data = load_task_data(spec)
    pooled = capture_layers(smollm, CaptureRequest(data.texts, pooling="last", max_length=spec.max_length)).pooled
    rows = probe_layers(pooled, encode_labels(data.labels, spec.labels), spec.settings)
    accuracy = rows[rows.metric == "accuracy"].sort_values("layer")["value"].to_numpy()
    assert len(accuracy) == 31
    assert abs(accuracy[0] - 0.5) < 0.06, accuracy[0]  # a token embedding of "." knows nothing of the sentence
    assert accuracy.max() > 0.7, accuracy.max()
    # The jin2024 protocol on the best layer equals scikit-learn on the same split.
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    best = int(np.argmax(accuracy))
    y = encode_labels(data.labels, spec.labels)
    X_train, X_test, y_train, y_test = train_test_split(pooled[best].astype(np.float64), y, test_size=0.4, random_state=42)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = (LogisticRegression().fit(X_train, y_train).predict(X_test) == y_test).mean()
    assert jin2024_probe(pooled[best].astype(np.float64), y)["accuracy"][0] == direct


def test_the_summary_says_why_a_concept_depth_is_missing():
    from layerbench.analysis import summary
    from layerbench.results.schema import complete_rows

    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 60)
    texts = [t + (" yes" if label else " no") for t, label in zip(_words(120, rng), y)]
    rows = probe_layers(rng.standard_normal((3, 120, 8)), y, ProbeSettings(), texts=texts)
    tidy = complete_rows(rows, model="m", revision=None, task="t", subset="s", split="cv5", n_layers=2, run_id="r")  # a null revision, as usual
    table = summary(tidy, {"t": "accuracy"})
    assert len(table) == 1 and np.isnan(table.concept_depth[0]) and table.note[0].startswith("not decodable beyond the baseline")
