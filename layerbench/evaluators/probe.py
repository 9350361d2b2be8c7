"""Concept-depth probing (Jin et al. 2024, "Exploring Concept Depth"): where does a concept become linearly decodable?

Per layer, a logistic-regression probe reads the pooled states and predicts
the label. A protocol is its settings (``split`` and ``probe`` of
:class:`~layerbench.families.probe.ProbeSettings`); the two registered:

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
over them, so a concept depth comes with its spread. One split (jin2024's)
has no spread over splits: its accuracy rows and depth points take their
``stderr`` from resamples of its test items instead (the fitted probes kept,
:func:`bootstrap_test_items`), which leaves out the training draw's share.
``peak_accuracy`` is the highest mean accuracy. The two thresholds are our
reading of the paper's figures, not numbers the paper fixes.

A probe's accuracy means only what its baselines leave (Hewitt and Liang
2019; Belinkov 2022), so every run also reports, on the same splits:

- ``bow_accuracy``: a bag-of-words logistic regression on the texts
  (unigrams and bigrams), the surface-feature baseline; ``chance_accuracy``
  the majority class's share of each test split;
- ``control_accuracy`` per layer: the same probe on the same states with the
  labels shuffled by a seeded permutation (Hewitt and Liang's control task),
  and ``selectivity`` = accuracy - control accuracy, split by split;
- ``beyond_baseline``: the best layer's accuracy minus the better of the two
  baselines, split by split, with a one-sided test (a paired t-test over the
  splits; a binomial bound on one split). The peak, jumping and converging
  points are reported only when it passes at the 5% level; otherwise they are
  null with the reason in ``note`` ("not decodable beyond the baseline").

Items that share a ``group`` (a data set's records: the statements about one
entity of a paired true/false design) are kept on one side of every
k-fold split, so that neither a probe nor the bag of words is scored
on an entity it saw with the opposite label.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from layerbench.errors import UserError
from layerbench.families import EvaluatorContext
from layerbench.families.probe import ProbeSettings
from layerbench.metrics.arrays import stderr_of
from layerbench.parallel import map_layers
from layerbench.results.items import Scored, item_ids
from layerbench.results.rows import mean_row, summary_row

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


def probe_splits(y: np.ndarray, settings: ProbeSettings, seed: int = 0, groups: Sequence[Any] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The protocol's train/test splits of N items: ``[(train indices, test indices)]``.

    ``stratified-k-fold``: shuffled with ``seed`` (grouped, when ``groups``
    ``[N]`` is given, so that a group is never on both sides).
    ``single-split``: the authors' ``train_test_split(test_size=0.4, random_state=42 + r)``
    of the items grouped by class, for r < ``repeats`` (``test_size`` and the first ``random_state`` are settings).

    Raises:
        UserError: a class has fewer items than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if settings.split == "single-split":
        order = grouped_by_class(y)
        return [(order[train], order[test])
                for train, test in (_jin2024_split(len(y), settings.split_random_state + r, settings.test_size) for r in range(settings.repeats))]
    folds = settings.folds
    if np.bincount(y).min() < folds:
        raise UserError(f"{folds}-fold cross-validation needs at least {folds} examples of every class; the smallest class has {np.bincount(y).min()}")
    positions = np.zeros(len(y))
    if groups is not None:
        return list(StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(positions, y, np.asarray(groups)))
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(positions, y))


def state_probe(settings: ProbeSettings) -> Any:
    """An unfitted probe of the protocol: standardized features and L2 logistic regression (ours), or the authors' default ``LogisticRegression()``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if settings.probe == "sklearn-default":
        return LogisticRegression()
    return make_pipeline(StandardScaler(), LogisticRegression(C=settings.C, max_iter=settings.max_iter))


def bag_of_words_probe() -> Any:
    """The surface baseline: unigram and bigram counts (scikit-learn's ``CountVectorizer``, fitted on the training split) and logistic regression."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(CountVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=1000))


def held_out_decisions(X: Any, y: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]], make_probe: Any) -> list[np.ndarray]:
    """The decision scores of a fresh ``make_probe()`` fitted on each split's training part, on its test part.

    Args:
        X: ``[N, D]`` features, or ``[N]`` texts (an object array) for :func:`bag_of_words_probe`. y: ``[N]`` class ids.

    Returns:
        Per split, ``[n_test]`` (two classes: the positive class's score) or ``[n_test, C]`` decision scores.
    """
    from sklearn.exceptions import ConvergenceWarning

    decisions = []
    for train, test in splits:
        probe = make_probe()
        with warnings.catch_warnings():
            # A separable layer's logistic regression stops at its iteration cap and says so; its scores are still right.
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            probe.fit(X[train], y[train])
        decisions.append(probe.decision_function(X[test]))
    return decisions


def split_scores(X: Any, y: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]], make_probe: Any,
                 decisions: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Score name -> ``[splits]`` test scores of a fresh ``make_probe()`` fitted on each split's training part.

    Args:
        X: ``[N, D]`` features, or ``[N]`` texts (an object array) for :func:`bag_of_words_probe`. y: ``[N]`` class ids.
        decisions: the splits' :func:`held_out_decisions`, when already computed (then ``X`` and ``make_probe`` are not used).
    """
    n_classes = int(y.max()) + 1
    decisions = decisions if decisions is not None else held_out_decisions(X, y, splits, make_probe)
    per_split: dict[str, list[float]] = {name: [] for name in SCORES}
    for (_, test), decision in zip(splits, decisions):
        for name, value in _scores(y[test], decision, n_classes).items():
            per_split[name].append(value)
    return {name: np.array(v) for name, v in per_split.items()}


def held_out_items(y: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]], decisions: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Each test item's held-out prediction, from the split that held it out.

    Returns:
        Arrays over the test parts concatenated (each item once per split that tests it): ``index`` (its
        position in ``y``), ``fold``, ``prediction`` (class id), ``probability`` (of its true class: the
        logistic sigmoid of a two-class probe's score, the softmax of a multi-class one's, which is scikit-learn's
        ``predict_proba`` of logistic regression) and ``correct`` (1.0 or 0.0).
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("index", "fold", "prediction", "probability", "correct")}
    for fold, ((_, test), decision) in enumerate(zip(splits, decisions)):
        decision = np.asarray(decision, dtype=np.float64)
        truth = y[test]
        if decision.ndim == 1:
            positive = 1.0 / (1.0 + np.exp(-decision))
            prediction = (decision > 0).astype(int)
            probability = np.where(truth == 1, positive, 1.0 - positive)
        else:
            shifted = np.exp(decision - decision.max(axis=1, keepdims=True))
            softmax = shifted / shifted.sum(axis=1, keepdims=True)
            prediction = decision.argmax(axis=1)
            probability = softmax[np.arange(len(test)), truth]
        for name, values in (("index", test), ("fold", np.full(len(test), fold)), ("prediction", prediction), ("probability", probability),
                             ("correct", (prediction == truth).astype(np.float64))):
            parts[name].append(np.asarray(values))
    return {name: np.concatenate(values) for name, values in parts.items()}


def cv_fold_scores(X: np.ndarray, y: np.ndarray, folds: int = 5, C: float = 1.0, max_iter: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Stratified k-fold probe on one layer: score name -> ``[folds]`` test scores, one per fold.

    Args:
        X: ``[N, D]`` features. y: ``[N]`` class ids.
    """
    settings = ProbeSettings(folds=folds, C=C, max_iter=max_iter)
    return split_scores(X, y, probe_splits(y, settings, seed), lambda: state_probe(settings))


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


def _jin2024_split(n: int, random_state: int, test_size: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """The authors' ``train_test_split(X, y, test_size=0.4, random_state=...)`` as (train, test) positions of N items.

    ``train_test_split`` draws positions from N and the seed alone, so splitting positions is splitting their X.
    """
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(n), test_size=test_size, random_state=random_state)
    return train, test


def jin2024_probe(X: np.ndarray, y: np.ndarray, random_state: int = 42) -> dict[str, tuple[float, float]]:
    """The authors' protocol on one layer: ``train_test_split(test_size=0.4, random_state=42)``, ``LogisticRegression()``.

    ``X`` and ``y`` are used in the order given (:func:`grouped_by_class` puts them in the authors').

    Returns:
        score name -> (test score, NaN): one split has no standard error.
    """
    settings = ProbeSettings(split="single-split", probe="sklearn-default")
    scores = split_scores(X, y, [_jin2024_split(len(y), random_state)], lambda: state_probe(settings))
    return {name: (float(values[0]), float("nan")) for name, values in scores.items()}


def control_labels(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Hewitt and Liang's control task for whole texts: the labels ``[N]`` shuffled by a seeded permutation (class counts kept)."""
    return y[np.random.default_rng([seed, 0xC0]).permutation(len(y))]


def chance_accuracy(y: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``[splits]``: the share of each test part's most frequent class (what always guessing it scores)."""
    return np.array([np.bincount(y[test]).max() / len(test) for _, test in splits])


def beyond_baseline(best: np.ndarray, baseline: np.ndarray, n_test: Sequence[int], alpha: float = 0.05) -> tuple[bool, float]:
    """Whether the best layer's accuracy beats the baseline's, split by split: (passes, one-sided p value).

    Args:
        best, baseline: ``[splits]`` accuracies on the same test parts.
        n_test: ``[splits]`` test sizes (used with one split only).

    Over k >= 2 splits: a paired t-test of the differences (k - 1 degrees of
    freedom); on one split, the normal approximation to the two accuracies'
    binomial errors on its test part. Passes when the mean difference is
    positive and p < ``alpha``.
    """
    from scipy import stats

    d = np.asarray(best, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    k = len(d)
    if k >= 2:
        se = d.std(ddof=1) / np.sqrt(k)
        p = float(stats.t.sf(d.mean() / se, k - 1)) if se > 0 else (0.0 if d.mean() > 0 else 1.0)
    else:
        a, b, n = float(best[0]), float(baseline[0]), int(n_test[0])
        se = np.sqrt((a * (1 - a) + b * (1 - b)) / n)
        p = float(stats.norm.sf(d[0] / se)) if se > 0 else (0.0 if d[0] > 0 else 1.0)
    return bool(d.mean() > 0 and p < alpha), p


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


def bootstrap_test_items(correct: np.ndarray, settings: ProbeSettings, layers: Sequence[int], seed: int = 0) -> dict[str, np.ndarray]:
    """The spread of one split's scores over resamples of its test items, every layer on the same draw.

    Args:
        correct: ``[K, T]`` 1/0 whether layer k's probe got test item t right.
        layers: the layer number of each of the K rows.

    Returns:
        ``accuracy``: ``[K]`` each layer's standard error (the standard deviation of its accuracy over
        :data:`layerbench.paired.STDERR_RESAMPLES` resamples of the T items with replacement); ``peak_layer``,
        ``jumping_layer``, ``converging_layer``: ``[B]`` the point on each resample's accuracy curve
        (:func:`concept_depth`; NaN where a curve has no jump).
    """
    from layerbench import paired

    weights = paired.bootstrap_weights(correct.shape[1], paired.STDERR_RESAMPLES, seed)
    curves = weights @ correct.T / weights.sum(axis=1, keepdims=True)  # [B, K]
    found = [concept_depth(curve, settings.jump_delta, settings.converge_epsilon, layers) for curve in curves]
    out = {"accuracy": curves.std(axis=0, ddof=1)}
    for point in ("peak", "jumping", "converging"):
        out[f"{point}_layer"] = np.array([f[f"{point}_layer"] for f in found])
    return out


def _probe_layer(states: np.ndarray, y: np.ndarray, shuffled: np.ndarray | None, splits: Sequence[tuple[np.ndarray, np.ndarray]],
                 settings: ProbeSettings) -> tuple[dict[str, np.ndarray], np.ndarray | None, list[np.ndarray]]:
    """One layer's probe on ``states`` ``[N, D]``: score name -> ``[splits]``, the control task's ``[splits]`` accuracy (None without
    ``shuffled``), and the held-out decision scores of each split (:func:`held_out_decisions`)."""
    X = states.astype(np.float64)
    make = partial(state_probe, settings)
    decisions = held_out_decisions(X, y, splits, make)
    scores = split_scores(X, y, splits, make, decisions)
    return scores, split_scores(X, shuffled, splits, make)["accuracy"] if shuffled is not None else None, decisions


def probe_layers(pooled: np.ndarray, y: np.ndarray, settings: ProbeSettings, seed: int = 0, layers: Sequence[int] | None = None,
                 texts: Sequence[str] | None = None, groups: Sequence[Any] | None = None, control: bool = True, jobs: int = 1,
                 n_layers: int | None = None) -> pd.DataFrame:
    """Probe scores of every layer, its baselines, and the concept-depth summary (:func:`probe_layers_items` with no item records)."""
    return probe_layers_items(pooled, y, settings, seed, layers, texts, groups, control, jobs, n_layers).rows


def probe_layers_items(pooled: np.ndarray, y: np.ndarray, settings: ProbeSettings, seed: int = 0, layers: Sequence[int] | None = None,
                       texts: Sequence[str] | None = None, groups: Sequence[Any] | None = None, control: bool = True, jobs: int = 1,
                       n_layers: int | None = None, ids: Sequence[str] | None = None) -> Scored:
    """Probe scores of every layer, its baselines, and the concept-depth summary, with the held-out item records.

    Args:
        pooled: ``[K, N, D]`` pooled states. y: ``[N]`` class ids.
        layers: the layer number of each of the K rows (default ``0..K-1``); depth = layer / L.
        n_layers: L, the model's blocks (default: the last of ``layers``; give it when ``layers`` is a subset).
        texts: the N texts the model read; given, the bag-of-words baseline is fitted on them.
        groups: ``[N]`` group of each item, kept on one side of every k-fold split.
        control: also fit the control-task probe per layer (and report selectivity).
        jobs: worker processes the layers are probed in (:func:`layerbench.parallel.map_layers`); the rows do not depend on it.
        ids: ``[N]`` item ids (:func:`layerbench.results.items.item_ids`); default: positions.

    Returns:
        ``Scored``: item records (per layer and test item: ``value`` 1/0 correct, ``target`` the class id,
        ``prediction``, ``probability`` of the true class, ``fold``; statistic ``mean`` of the ``accuracy`` rows), and the rows ``metric, layer, value, stderr, n, higher_is_better, note``:
        accuracy, f1 and auroc per layer (and ``control_accuracy``,
        ``selectivity``); ``peak_*``, ``jumping_*`` and ``converging_*``
        summaries (``*_depth`` = layer / L), each the mean over splits with the
        standard error over them, null with a note when the best layer does
        not beat the baselines; ``peak_accuracy``, ``chance_accuracy``,
        ``bow_accuracy`` and ``beyond_baseline``.
    """
    layers = list(layers) if layers is not None else list(range(pooled.shape[0]))
    n_layers = n_layers if n_layers is not None else layers[-1]
    splits = probe_splits(y, settings, seed, groups)
    shuffled = control_labels(y, seed) if control else None
    fitted = map_layers(partial(_probe_layer, y=y, shuffled=shuffled, splits=splits, settings=settings), [np.asarray(pooled[index]) for index in range(len(layers))], jobs)
    per_layer = [scores for scores, _, _ in fitted]  # per layer: name -> [splits]
    rows = []
    for layer, scores in zip(layers, per_layer):
        rows += [mean_row(name, layer, v, higher_is_better=True) | {"n": len(y)} for name, v in scores.items()]  # n: the items probed, not the splits
    if control:
        for index, layer in enumerate(layers):
            control_accuracy = fitted[index][1]
            assert control_accuracy is not None
            rows.append(mean_row("control_accuracy", layer, control_accuracy, higher_is_better=None) | {"n": len(y)})
            rows.append(mean_row("selectivity", layer, per_layer[index]["accuracy"] - control_accuracy, higher_is_better=True) | {"n": len(y)})
    frame = pd.DataFrame(rows)
    held = [held_out_items(y, splits, decisions) for _, _, decisions in fitted]  # per layer
    resampled: dict[str, np.ndarray] = {}
    if len(splits) == 1:  # one split (jin2024's) has no spread over splits: its test items are resampled instead
        points = bootstrap_test_items(np.stack([h["correct"] for h in held]), settings, layers, seed)
        frame.loc[frame.metric == "accuracy", "stderr"] = points.pop("accuracy")
        resampled = points
    accuracy = np.stack([scores["accuracy"] for scores in per_layer])  # [K, splits]
    curve = frame[frame.metric == "accuracy"].reset_index(drop=True)
    best_index = int(curve.value.idxmax())  # the best layer is read off the mean curve: a mean of each split's own maximum would be biased upwards
    described = [summary_row("peak_accuracy", curve.value[best_index], stderr=curve.stderr[best_index], n=len(y), higher_is_better=True)]
    chance = chance_accuracy(y, splits)
    baseline = chance
    described.append(mean_row("chance_accuracy", None, chance, higher_is_better=None) | {"n": len(y)})
    if texts is not None:
        bow = split_scores(np.asarray(list(texts), dtype=object), y, splits, bag_of_words_probe)["accuracy"]
        described.append(mean_row("bow_accuracy", None, bow, higher_is_better=None) | {"n": len(y)})
        baseline = np.maximum(chance, bow)
    passes, p = beyond_baseline(accuracy[best_index], baseline, [len(test) for _, test in splits])
    margin = accuracy[best_index] - baseline
    verdict = (f"best layer {layers[best_index]}: accuracy {accuracy[best_index].mean():.3f} vs baseline {baseline.mean():.3f} "
               f"({'bag of words or chance' if texts is not None else 'chance'}, the better per split), one-sided p = {p:.2g} over {len(splits)} split(s)")
    described.append(mean_row("beyond_baseline", None, margin, higher_is_better=True) | {"n": len(y), "note": verdict})
    per_split = [concept_depth(accuracy[:, k], settings.jump_delta, settings.converge_epsilon, layers) for k in range(accuracy.shape[1])]
    for point in ("peak", "jumping", "converging"):
        per_split_layers = np.array([depth[f"{point}_layer"] for depth in per_split])
        for name, values in ((f"{point}_layer", per_split_layers), (f"{point}_depth", per_split_layers / n_layers)):
            if not passes:  # no concept to place in depth
                described.append(summary_row(name, float("nan"), n=len(y), higher_is_better=None, note=f"not decodable beyond the baseline: {verdict}"))
                continue
            defined = values[~np.isnan(values)]
            value, err = mean_and_spread(defined) if len(defined) else (float("nan"), float("nan"))
            if resampled and len(defined):
                draws = resampled[f"{point}_layer"] / (n_layers if name.endswith("_depth") else 1)
                err = float(np.nanstd(draws, ddof=1)) if np.isfinite(draws).sum() > 1 else float("nan")
            described.append(summary_row(name, value, stderr=err, n=len(y), higher_is_better=None))
    rows_out = pd.concat([frame, pd.DataFrame(described)], ignore_index=True)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(y))]
    items = []
    for layer, kept in zip(layers, held):
        items.append(pd.DataFrame({"metric": "accuracy", "statistic": "mean", "layer": layer, "item": np.asarray(ids, dtype=object)[kept["index"]],
                                   "value": kept["correct"], "target": y[kept["index"]].astype(np.float64), "prediction": kept["prediction"].astype(np.float64),
                                   "probability": kept["probability"], "fold": kept["fold"]}))
    return Scored(rows_out, pd.concat(items, ignore_index=True))


def evaluate_probe(context: EvaluatorContext) -> Scored:
    """Probe rows for every variant of the states (``clean``, and robustness variants as subsets ``<subset>+<variant>``), with their item records.

    ``context.layers`` numbers the rows of each ``[K, N, D]`` state array (default ``0..K-1``); ``context.n_layers`` is the
    model's L (default: the last of ``layers``); ``context.jobs``: worker processes for the layers. Items are keyed by the hash of their text.
    """
    states, data, spec, seed, layers, n_layers, jobs = context.states or {}, context.data, context.spec, context.seed, context.layers, context.n_layers, context.jobs
    if data.labels is None:
        raise UserError(f"task '{spec.name}': a probe needs labels; its data has none (set label_field)")
    y = encode_labels(data.labels, spec.labels)
    groups = [r["group"] for r in data.records] if data.records and all("group" in r for r in data.records) else None
    ids = item_ids(data.texts)
    frames, items = [], []
    for variant, pooled in states.items():
        # Baselines and the control task once, on the clean texts; a robustness variant is read against them.
        clean = variant == "clean"
        scored = probe_layers_items(pooled, y, spec.settings, seed, layers, texts=data.texts if clean else None, groups=groups, control=clean, jobs=jobs,
                                    n_layers=n_layers, ids=ids)
        subset = spec.subset if variant == "clean" else f"{spec.subset}+{variant}"
        frames.append(scored.rows.assign(subset=subset))
        if scored.items is not None:
            items.append(scored.items.assign(subset=subset))
    return Scored(pd.concat(frames, ignore_index=True), pd.concat(items, ignore_index=True) if items else None)
