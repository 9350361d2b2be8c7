"""Concept-depth probing (Jin et al. 2024, "Exploring Concept Depth"): where does a concept become linearly decodable?

Per layer, a logistic-regression probe reads the pooled states and predicts
the label. Two protocols:

- ``layerbench`` (default): stratified k-fold cross-validation (shuffled,
  seeded), features standardized on each training fold, L2-penalized logistic
  regression; accuracy, F1 and AUROC as the mean over folds with the standard
  error ``std(ddof=1) / sqrt(k)``.
- ``jin2024``: the authors' released code (Luckfort/CD ``main.py``): the
  texts grouped by class in the order of the spec's ``labels`` (their
  ``X = concat(first list, second list)``), one
  ``train_test_split(test_size=0.4, random_state=42)``, no scaling,
  scikit-learn's default ``LogisticRegression``; scores on the test part.
  ``repeats`` > 1 adds splits with ``random_state`` 43, 44, ... and reports
  the mean and standard error over them.

Summary rows (``layer = -1``) place the concept in depth: the peak layer,
the jumping point (the first layer whose accuracy rises by at least
``jump_delta`` over the layer before) and the converging point (the first
layer within ``converge_epsilon`` of the best accuracy). Each point is found
on every split's own accuracy curve (each fold, or each jin2024 split); the
row's value is the mean over splits and its ``stderr`` the standard error
over them, so a concept depth comes with its spread (one split has none).
``peak_accuracy`` is the highest mean accuracy. The two thresholds are our
reading of the paper's figures, not numbers the paper fixes.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.families.probe import ProbeSettings
from layerbench.metrics.arrays import stderr_of
from layerbench.results.rows import mean_row, summary_row
from layerbench.specs.schema import TaskSpec

SCORES = ("accuracy", "f1", "auroc")


def encode_labels(labels: Sequence[Any], expected: Sequence[Any] | None) -> np.ndarray:
    """Class ids ``[N]`` of ``labels``: positions in ``expected`` (the positive class last) or in their sorted set.

    Raises:
        UserError: fewer than two classes, or a label outside ``expected``.
    """
    classes = list(expected) if expected is not None else sorted(set(labels), key=str)
    lookup = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in labels} - set(lookup))
    if unknown:
        raise UserError(f"labels {unknown} are not among the spec's labels {classes}")
    y = np.array([lookup[str(v)] for v in labels])
    if len(np.unique(y)) < 2:
        raise UserError(f"a probe needs two classes or more; the data has only {classes[int(y[0])]!r}")
    return y


def _scores(y_true: np.ndarray, scores: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, F1 (of the positive class, or macro over classes) and AUROC (one-vs-rest macro) from decision scores."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    if n_classes == 2:
        predicted = (scores > 0).astype(int)
        f1 = f1_score(y_true, predicted, zero_division=0.0)
        auroc = roc_auc_score(y_true, scores) if len(np.unique(y_true)) == 2 else np.nan
    else:
        predicted = scores.argmax(axis=1)
        f1 = f1_score(y_true, predicted, average="macro", zero_division=0.0)
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        auroc = roc_auc_score(y_true, shifted / shifted.sum(axis=1, keepdims=True), multi_class="ovr", labels=np.arange(n_classes))
    return {"accuracy": float(accuracy_score(y_true, predicted)), "f1": float(f1), "auroc": float(auroc)}


def cv_fold_scores(X: np.ndarray, y: np.ndarray, folds: int = 5, C: float = 1.0, max_iter: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Stratified k-fold probe on one layer: score name -> ``[folds]`` test scores, one per fold.

    Args:
        X: ``[N, D]`` features. y: ``[N]`` class ids.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_classes = int(y.max()) + 1
    if np.bincount(y).min() < folds:
        raise UserError(f"{folds}-fold cross-validation needs at least {folds} examples of every class; the smallest class has {np.bincount(y).min()}")
    per_fold: dict[str, list[float]] = {name: [] for name in SCORES}
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, y):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a separable layer warns about convergence; its scores are still right
            probe.fit(X[train], y[train])
        for name, value in _scores(y[test], probe.decision_function(X[test]), n_classes).items():
            per_fold[name].append(value)
    return {name: np.array(v) for name, v in per_fold.items()}


def mean_and_spread(values: np.ndarray) -> tuple[float, float]:
    """(mean, standard error ``std(ddof=1) / sqrt(k)``) of k split scores; NaN standard error for one split."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), stderr_of(values)


def cv_probe(X: np.ndarray, y: np.ndarray, folds: int = 5, C: float = 1.0, max_iter: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Stratified k-fold probe on one layer: score name -> (mean over folds, standard error over folds).

    Args:
        X: ``[N, D]`` features. y: ``[N]`` class ids.
    """
    return {name: mean_and_spread(v) for name, v in cv_fold_scores(X, y, folds, C, max_iter, seed).items()}


def jin2024_probe(X: np.ndarray, y: np.ndarray, random_state: int = 42) -> dict[str, tuple[float, float]]:
    """The authors' protocol on one layer: ``train_test_split(test_size=0.4, random_state=42)``, ``LogisticRegression()``.

    ``X`` and ``y`` are used in the order given (:func:`grouped_by_class` puts them in the authors').

    Returns:
        score name -> (test score, NaN): one split has no standard error.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.4, random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the default max_iter=100 often stops early, as in the authors' runs
        probe = LogisticRegression().fit(X_train, y_train)
    return {name: (value, float("nan")) for name, value in _scores(y_test, probe.decision_function(X_test), int(y.max()) + 1).items()}


def grouped_by_class(y: np.ndarray) -> np.ndarray:
    """The order of Jin et al.'s ``X``: every item of class 0 (in data order), then class 1, ...: ``[N]`` indices."""
    return np.argsort(y, kind="stable")


def concept_depth(accuracy: np.ndarray, jump_delta: float = 0.1, converge_epsilon: float = 0.01, layers: Sequence[int] | None = None) -> dict[str, float]:
    """Where a concept appears along the layers.

    Args:
        accuracy: ``[K]`` probe accuracy per layer.
        layers: the layer number of each entry (default ``0..K-1``; ``1..L`` at the ``mlp-input`` site).

    Returns:
        ``peak_layer`` (first argmax), ``peak_accuracy``, ``jumping_layer``
        (the first layer whose accuracy exceeds the layer before by at least
        jump_delta; NaN if none) and ``converging_layer`` (the first layer with
        accuracy >= max - converge_epsilon), as layer numbers.
    """
    accuracy = np.asarray(accuracy, dtype=np.float64)
    number = np.asarray(layers if layers is not None else range(len(accuracy)), dtype=np.float64)
    rises = np.flatnonzero(np.diff(accuracy) >= jump_delta)
    return {
        "peak_layer": float(number[np.argmax(accuracy)]),
        "peak_accuracy": float(accuracy.max()),
        "jumping_layer": float(number[rises[0] + 1]) if len(rises) else float("nan"),
        "converging_layer": float(number[np.flatnonzero(accuracy >= accuracy.max() - converge_epsilon)[0]]),
    }


def probe_layers(pooled: np.ndarray, y: np.ndarray, settings: ProbeSettings, seed: int = 0, layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Probe scores of every layer and the concept-depth summary.

    Args:
        pooled: ``[K, N, D]`` pooled states. y: ``[N]`` class ids.
        layers: the layer number of each of the K rows (default ``0..K-1``); depth = layer / L with L the last.

    Returns:
        Rows ``metric, layer, value, stderr, n, higher_is_better``: accuracy,
        f1 and auroc per layer; ``peak_*``, ``jumping_*`` and ``converging_*``
        at ``layer = -1`` (``*_depth`` = layer / L): each depth point the mean
        over splits with the standard error over them; ``peak_accuracy`` the
        highest mean accuracy, with that layer's standard error.
    """
    layers = list(layers) if layers is not None else list(range(pooled.shape[0]))
    n_layers = layers[-1]
    splits: list[dict[str, np.ndarray]] = []  # per layer: score name -> [splits]
    if settings.protocol == "jin2024":
        order = grouped_by_class(y)
        y_ordered = y[order]
        for index in range(len(layers)):
            X = pooled[index][order].astype(np.float64)
            runs = [jin2024_probe(X, y_ordered, 42 + r) for r in range(settings.repeats)]
            splits.append({name: np.array([run[name][0] for run in runs]) for name in SCORES})
    else:
        for index in range(len(layers)):
            splits.append(cv_fold_scores(pooled[index].astype(np.float64), y, settings.folds, settings.C, settings.max_iter, seed))
    rows = []
    for layer, scores in zip(layers, splits):
        rows += [mean_row(name, layer, v, higher_is_better=True) | {"n": len(y)} for name, v in scores.items()]  # n: the items probed, not the splits
    frame = pd.DataFrame(rows)
    accuracy = np.stack([scores["accuracy"] for scores in splits])  # [K, splits]
    per_split = [concept_depth(accuracy[:, k], settings.jump_delta, settings.converge_epsilon, layers) for k in range(accuracy.shape[1])]
    described = []
    for point in ("peak", "jumping", "converging"):
        per_split_layers = np.array([p[f"{point}_layer"] for p in per_split])
        for name, values in ((f"{point}_layer", per_split_layers), (f"{point}_depth", per_split_layers / n_layers)):
            defined = values[~np.isnan(values)]
            value, err = mean_and_spread(defined) if len(defined) else (float("nan"), float("nan"))
            described.append(summary_row(name, value, stderr=err, n=len(y), higher_is_better=None))
    # The best layer's accuracy is read off the mean curve: a mean of each split's own maximum would be biased upwards.
    curve = frame[frame.metric == "accuracy"].reset_index(drop=True)
    best = curve.loc[curve.value.idxmax()]
    described.append(summary_row("peak_accuracy", best.value, stderr=best.stderr, n=len(y), higher_is_better=True))
    return pd.concat([frame, pd.DataFrame(described)], ignore_index=True)


def evaluate_probe(states: Mapping[str, np.ndarray], data: TextDataset, spec: TaskSpec, seed: int = 0, layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Probe rows for every variant of the states (``clean``, and robustness variants as subsets ``<subset>+<variant>``).

    ``layers`` numbers the rows of each ``[K, N, D]`` state array (default ``0..K-1``).
    """
    if data.labels is None:
        raise UserError(f"task '{spec.name}': a probe needs labels; its data has none (set label_field)")
    y = encode_labels(data.labels, spec.labels)
    frames = []
    for variant, pooled in states.items():
        frame = probe_layers(pooled, y, spec.settings, seed, layers)
        frame["subset"] = spec.subset if variant == "clean" else f"{spec.subset}+{variant}"
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
