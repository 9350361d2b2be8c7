"""Layer similarity within a model: the layer x layer maps, each layer against the previous and the last, nulls, intervals.

From the pooled states ``[K, N, D]`` of the task's texts (every layer from the one capture pass), each layer's values
clamped at its 95th percentile of magnitude first (``clamp_quantile``, as platonic-rep prepares features):

- maps: ``cka`` and ``mutual_knn`` rows for every (source layer i, layer j), ``source_layer = i`` (the site draws them as
  heat maps); symmetric, 1 on the diagonal.
- curves: ``<measure>_to_previous`` (layer l against the layer read before it) and ``<measure>_to_last`` (l against the
  last layer read), with standard errors: mutual k-NN's from its per-text agreements (std / sqrt(N)); CKA's from a
  delete-half jackknife (the standard deviation of the value over ``half_samples`` random halves of the texts, which for
  d = N/2 deleted is the full estimate's standard error; Shao and Wu 1989); CKNNA's none.
- nulls: ``<measure>_to_last_null``, the same measure with the last layer's rows shuffled (seeded): what an unrelated
  pairing of the same texts gives (about 0 for unbiased CKA and CKNNA, k/(N-1) for mutual k-NN).
- summary: ``settling_depth``, the first layer from which every later layer's CKA to the last is at least
  ``settled_at``, over L; its standard error from the same halves.

Beside the rows, the run keeps each layer's k-NN lists and Gram sketch (``sketch_rank`` eigenpairs; :mod:`layerbench.results.sketches`),
from which :mod:`layerbench.across_models` compares the model with every other model run on the same texts, and
``layerbench compare`` a checkpoint with its base, without capturing either again.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from layerbench.families import EvaluatorContext
from layerbench.families.similarity import SimilaritySettings
from layerbench.metrics.arrays import to_numpy
from layerbench.metrics.similarity import cka_of_gram_pairs, cka_of_grams, cknna, knn_agreements, knn_lists, mutual_knn_matrix, sketch_gram
from layerbench.results.items import Scored
from layerbench.results.rows import layer_row, mean_row, summary_row
from layerbench.results.sketches import sketch_frame, texts_id


def clamped(X: np.ndarray, q: float | None) -> np.ndarray:
    """``X`` with every value clamped to +-the ``q``-th quantile of ``|X|`` over all its entries (platonic-rep's
    ``remove_outliers(exact=True)``: the sorted absolute values' entry at ``int(q * size)``); ``X`` itself for None or 1."""
    if q is None or q >= 1:
        return X
    bound = np.sort(np.abs(X).ravel())[int(q * X.size)]
    return np.clip(X, -bound, bound)


def settling_index(to_last: np.ndarray, settled_at: float) -> int:
    """The first position from which every value of ``to_last`` ``[K]`` (each layer's similarity to the last) is at least
    ``settled_at``; the last position (similar to itself) where no earlier one qualifies."""
    below = np.flatnonzero(~(to_last >= settled_at))
    return int(below[-1] + 1) if len(below) else 0


def prepared_layers(pooled: Any, settings: SimilaritySettings) -> list[np.ndarray]:
    """Each layer of the states ``[K, N, D]`` as float64 ``[N, D]``, clamped (:func:`clamped`): what every measure reads."""
    return [clamped(np.asarray(to_numpy(layer), dtype=np.float64), settings.clamp_quantile) for layer in pooled]


def neighbour_lists(X: list[np.ndarray], settings: SimilaritySettings) -> np.ndarray:
    """``[K, N, k]``: each layer's k-NN lists (:func:`~layerbench.metrics.similarity.knn_lists`)."""
    return np.stack([knn_lists(x, settings.k) for x in X])


def similarity_rows(X: list[np.ndarray], layers: list[int], n_layers: int, settings: SimilaritySettings, lists: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The rows of one model's prepared layers ``K x [N, D]`` (:func:`prepared_layers`) at ``layers`` (module docstring);
    ``lists``: their k-NN lists where already made (:func:`neighbour_lists`)."""
    K, n = len(X), X[0].shape[0]
    rows: list[dict[str, Any]] = []
    previous = [(i, i - 1) for i in range(1, K)]
    to_last = [(i, K - 1) for i in range(K)]
    rng = np.random.default_rng([settings.seed, 0x51])
    shuffle = rng.permutation(n)
    if "cka" in settings.measures:
        grams = [x @ x.T for x in X]
        grid = cka_of_grams(grams, unbiased=settings.unbiased)
        rows += [layer_row("cka", layers[j], grid[i, j], n=n, higher_is_better=None, source_layer=layers[i]) for i in range(K) for j in range(K)]
        halves = [np.sort(rng.choice(n, size=n // 2, replace=False)) for _ in range(settings.half_samples)]
        spread = np.array([cka_of_gram_pairs([G[np.ix_(h, h)] for G in grams], previous + to_last, settings.unbiased) for h in halves])
        se = spread.std(axis=0, ddof=1)
        rows += [layer_row("cka_to_previous", layers[i], grid[i, j], n=n, stderr=se[p], higher_is_better=None) for p, (i, j) in enumerate(previous)]
        rows += [layer_row("cka_to_last", layers[i], grid[i, j], n=n, stderr=se[len(previous) + p], higher_is_better=None) for p, (i, j) in enumerate(to_last)]
        null = cka_of_grams(grams, [grams[-1][np.ix_(shuffle, shuffle)]], settings.unbiased)[:, 0]
        rows += [layer_row("cka_to_last_null", layers[i], null[i], n=n, higher_is_better=None) for i in range(K)]
        settled = settling_index(grid[:, -1], settings.settled_at)
        half_depths = [layers[settling_index(s[len(previous):], settings.settled_at)] / n_layers for s in spread]
        rows.append(summary_row("settling_depth", layers[settled] / n_layers, n=n, stderr=float(np.std(half_depths, ddof=1)), higher_is_better=None))
        rows.append(summary_row("settling_layer", layers[settled], n=n, higher_is_better=None))
    if "mutual_knn" in settings.measures:
        lists = neighbour_lists(X, settings) if lists is None else lists  # [K, N, k]
        grid = mutual_knn_matrix(lists, lists)
        rows += [layer_row("mutual_knn", layers[j], grid[i, j], n=n, higher_is_better=None, source_layer=layers[i]) for i in range(K) for j in range(K)]
        for name, pairs in (("mutual_knn_to_previous", previous), ("mutual_knn_to_last", to_last)):
            rows += [mean_row(name, layers[i], knn_agreements(lists[i], lists[j]), higher_is_better=None) for i, j in pairs]
        unrelated = np.argsort(shuffle)[lists[-1][shuffle]]  # the last layer's neighbour lists of shuffled rows, in the shuffled labels
        rows += [mean_row("mutual_knn_to_last_null", layers[i], knn_agreements(lists[i], unrelated), higher_is_better=None) for i in range(K)]
    if "cknna" in settings.measures:
        rows += [layer_row("cknna_to_last", layers[i], cknna(X[i], X[-1], settings.k), n=n, higher_is_better=None) for i in range(K)]
        rows += [layer_row("cknna_to_last_null", layers[i], cknna(X[i], X[-1][shuffle], settings.k), n=n, higher_is_better=None) for i in range(K)]
    return [r | {"subset": "all"} for r in rows]


def evaluate_similarity(context: EvaluatorContext) -> Scored:
    """The similarity rows of a task's clean states (robustness variants are not read: the maps compare layers, not inputs),
    and a note for the manifest naming what the numbers are: the estimators, k, the clamp, the pooling, n and the dtypes."""
    settings: SimilaritySettings = context.settings
    assert context.states is not None  # a family that reads states is given them
    pooled = context.states["clean"]
    layers = list(context.layers) if context.layers is not None else list(range(pooled.shape[0]))
    n_layers = context.n_layers if context.n_layers is not None else layers[-1]
    X = prepared_layers(pooled, settings)
    lists = neighbour_lists(X, settings) if "mutual_knn" in settings.measures or settings.sketch_rank else None
    frame = pd.DataFrame(similarity_rows(X, layers, n_layers, settings, lists))
    frame["source_layer"] = frame.get("source_layer", pd.Series(dtype="Int64")).astype("Int64")
    estimators = {"cka": "linear CKA, " + ("unbiased HSIC (Song et al. 2012)" if settings.unbiased else "biased HSIC (Kornblith et al. 2019)"),
                  "mutual_knn": f"mutual {settings.k}-NN alignment, cosine (Huh et al. 2024)", "cknna": f"CKNNA, k = {settings.k} (Huh et al. 2024)"}
    notes = {"similarity": {"measures": {m: estimators[m] for m in settings.measures}, "clamp_quantile": settings.clamp_quantile,
                            "pooling": context.spec.pooling, "texts": int(pooled.shape[1]), "states_dtype": str(getattr(pooled, "dtype", "")),
                            "arithmetic": "float64", "half_samples": settings.half_samples, "settled_at": settings.settled_at,
                            "sketch_rank": settings.sketch_rank}}
    sketches = None
    if settings.sketch_rank and lists is not None:
        grams = [sketch_gram(x, settings.sketch_rank, settings.unbiased) for x in X]
        sketches = sketch_frame(layers, lists, grams, texts_id(list(context.data.texts)), settings.unbiased, settings.clamp_quantile)
    return Scored(frame, notes=notes, sketches=sketches)
