"""Concept-depth probing: closed forms on synthetic layers, the jin2024 protocol against scikit-learn, and SmolLM2's capitals."""
from __future__ import annotations

import numpy as np
import pytest

from layerbench.data import load_task_data
from layerbench.evaluators.probe import concept_depth, cv_probe, encode_labels, jin2024_probe, probe_layers
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
    assert set(per_layer.metric) == {"accuracy", "f1", "auroc"} and len(per_layer) == 9
    summary = rows[rows.layer.isna()].set_index("metric")["value"]
    assert summary["peak_layer"] == 2 and summary["peak_depth"] == 1.0 and summary["peak_accuracy"] == 1.0


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
    from layerbench import capture_layers

    spec = get_task("concept-capitals")
    data = load_task_data(spec)
    pooled = capture_layers(smollm, data.texts, "last", max_length=spec.max_length).pooled
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
