"""MTEB per layer (Skean et al. 2025): how good is each layer as a text embedding, scored by mteb's own evaluators.

The runner captures every text the task encodes once, all layers from one
forward pass (the data loader found the texts with a recording run). Here a
:class:`LayerEncoder` hands mteb layer l's rows of that capture, and mteb
evaluates it as it would any model, so the scores are mteb's. L+1 layers
cost L+1 mteb evaluations (classifiers, k-means, ranking) and no forward pass;
they run in ``jobs`` worker processes (:func:`layerbench.parallel.map_layers`).
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.data.mteb_tasks import model_meta, run_mteb
from layerbench.errors import UserError
from layerbench.evaluators.mteb_items import PredictionRecorder
from layerbench.families import EvaluatorContext
from layerbench.metrics.arrays import stderr_of
from layerbench.parallel import map_layers
from layerbench.results.items import Scored, item_stderr

# Fields of mteb's score dicts that are not scores.
_NOT_SCORES = {"hf_subset", "languages", "mteb_version", "evaluation_time", "scores_per_experiment"}


def layer_encoder(states: np.ndarray, inputs: list[tuple[str, str | None]], normalize: bool = False) -> Any:
    """An mteb encoder serving one layer's captured states.

    Args:
        states: ``[N, D]`` pooled states of one layer, in the capture's order.
        inputs: the N (text, prompt type) pairs mteb asks for, in the same
            order: a text's row is found by what mteb asks for, whatever
            prefix the model read before it.
        normalize: L2-normalize rows before mteb sees them (mteb's cosine scores are unchanged by it; classifiers are not).
    """
    from mteb.models.abs_encoder import AbsEncoder

    index = {pair: i for i, pair in enumerate(inputs)}

    class LayerEncoder(AbsEncoder):
        def __init__(self) -> None:
            self.mteb_model_meta = model_meta("layer-encoder")

        def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
            kind = prompt_type.value if prompt_type is not None else None
            asked = [(text, kind) for batch in inputs for text in batch["text"]]
            try:
                rows = states[[index[pair] for pair in asked]]
            except KeyError as exc:  # mteb asked for a text the recording run did not see
                raise RuntimeError(f"mteb asked for a text outside the capture: {str(exc)[:80]}") from None
            rows = rows.astype(np.float32)
            if normalize:
                rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
            return rows

    return LayerEncoder()


def encoder_inputs(data: TextDataset) -> list[tuple[str, str | None]]:
    """The (text, prompt type) mteb asks for at each row of ``data``'s capture (:func:`layer_encoder`'s ``inputs``)."""
    if data.records and all("prompt_type" in r for r in data.records):
        return [(r["input"], r["prompt_type"]) for r in data.records]
    return [(text, None) for text in data.texts]


def score_rows(scores: Mapping[str, list[dict[str, Any]]], bootstrapped: Collection[tuple[str, str]] = (), main: str | None = None) -> list[dict[str, Any]]:
    """mteb's ``TaskResult.scores`` as rows ``subset, split, metric, value, stderr``.

    Every numeric score becomes its own metric (nested dicts joined with
    dots); ``main_score`` is mteb's headline score. A score reported per
    experiment (classification) gets the standard error over experiments.
    In the (subset, split) pairs of ``bootstrapped``, whose experiments are
    bootstrap replicates (:func:`experiments_are_bootstraps`), a score with
    one value per experiment (clustering's ``v_measures``, ``ami_scores``)
    gets their standard deviation (ddof=1) as its standard error, and
    ``main_score`` that of ``main``, the task's main score.
    """
    rows = []
    for split, entries in scores.items():
        for entry in entries:
            subset = entry.get("hf_subset", "default")
            experiments = entry.get("scores_per_experiment") or []
            replicates = _replicates(entry) if (subset, split) in bootstrapped else {}
            if main in replicates:
                replicates["main_score"] = replicates[main]
            for name, value in _flatten(entry):
                if name in replicates:
                    stderr = float(np.std(replicates[name], ddof=1)) if len(replicates[name]) > 1 else math.nan
                else:
                    spread: list[float] = [e[name] for e in experiments if isinstance(e, dict) and isinstance(e.get(name), (int, float))]
                    stderr = stderr_of(np.asarray(spread))
                rows.append(dict(subset=subset, split=split, metric=name, value=float(value), stderr=stderr))
    return rows


def _replicates(entry: Mapping[str, Any]) -> dict[str, list[float]]:
    """A clustering entry's score of each experiment, all levels of a hierarchy together (as mteb averages them): metric ->
    values, from ``v_measures`` and ``<metric>_scores`` (``{"Level 0": [...], ...}``)."""
    out = {}
    for key, levels in entry.items():
        if isinstance(levels, Mapping) and (key == "v_measures" or key.endswith("_scores")):
            values = [float(v) for level in levels.values() if isinstance(level, list) for v in level]
            if values:
                out["v_measure" if key == "v_measures" else key.removesuffix("_scores")] = values
    return out


def experiments_are_bootstraps(task: Any, documents: int) -> bool:
    """Whether each experiment of an mteb clustering task is a bootstrap replicate of its score on ``documents`` texts.

    mteb's clustering embeds the documents (all of them, unless ``max_fraction_of_documents_to_embed`` or
    ``max_document_to_embed`` downsamples), then 10 times draws ``max_documents_per_cluster`` of them with
    replacement and clusters the draw with k-means of a fixed seed. Where nothing is downsampled and a draw has as
    many documents as there are (the packaged tasks set it so), each experiment is the score of a bootstrap resample,
    and their standard deviation is the score's standard error: the spread of the score over other samples of as many
    documents. A conservative one: the main score is the mean of the 10 replicates, which moves less between samples
    than one replicate does (on MiniLM's BBC states the spread over disjoint samples was 0.57-0.74 of it;
    tests/test_mteb.py). mteb's own defaults (4% of the documents embedded, 16,384 drawn from them) make draws of another size,
    whose spread is not the score's, and their rows keep no standard error.
    """
    return (task.metadata.type == "Clustering" and getattr(task, "max_fraction_of_documents_to_embed", 0) is None
            and getattr(task, "max_document_to_embed", 0) is None and getattr(task, "max_documents_per_cluster", None) == documents)


def _flatten(entry: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    out = []
    for key, value in entry.items():
        if key in _NOT_SCORES:
            continue
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None and not math.isnan(value):
            out.append((f"{prefix}{key}", float(value)))
    return out


def score_direction(name: str) -> bool | None:
    """Whether a higher value of mteb score ``name`` is better: True for scores, None for spreads (``*_std``) and
    nAUC diagnostics (``nauc_*``, the calibration of scores against query difficulty), which have no better side."""
    return None if name.endswith("_std") or name.startswith("nauc_") else True


def _layer_scores(states: np.ndarray, inputs: list[tuple[str, str | None]], normalize: bool, task: Any, splits: list[str] | None,
                  metric: str = "main_score") -> tuple[list[dict[str, Any]], pd.DataFrame | None]:
    """mteb's score rows (:func:`score_rows`) of one layer's states ``[N, D]``, and the item records of its main score
    (``metric``: the rows' name for it), from the predictions mteb keeps per item (:class:`PredictionRecorder`)."""
    with PredictionRecorder(task) as recorder:
        result = run_mteb(layer_encoder(states, inputs, normalize), task, splits, keep_predictions=True)
    bootstrapped = {key for key, documents in recorder.documents().items() if experiments_are_bootstraps(task, documents)}
    rows = [row for task_result in result.task_results for row in score_rows(task_result.scores, bootstrapped, task.metadata.main_score)]
    return rows, recorder.items(metric)


def evaluate_mteb(context: EvaluatorContext) -> Scored:
    """mteb's scores of every layer: rows ``subset, split, metric, layer, value, stderr, n, higher_is_better``, and the item records of the
    main score where mteb's evaluator has items (:mod:`layerbench.evaluators.mteb_items`).

    ``context.states["clean"]`` is ``[K, N, D]``; ``context.layers`` numbers its rows (default ``0..K-1``); ``context.jobs``: worker
    processes the layers are evaluated in (mteb reseeds the task for each layer, so the rows do not depend on it).
    """
    states, data, spec, layers, jobs = context.states or {}, context.data, context.spec, context.layers, context.jobs
    task = data.payload
    if task is None:
        raise UserError(f"task '{spec.name}': an mteb task needs data from an mteb source")
    settings = spec.settings
    pooled = states["clean"]
    layers = list(layers) if layers is not None else list(range(pooled.shape[0]))
    # The rows name mteb's main score "main_score" (and by its own name); the items carry the name the task's spec gates on.
    metric = spec.main_score if spec.main_score in ("main_score", task.metadata.main_score) else "main_score"
    score = partial(_layer_scores, inputs=encoder_inputs(data), normalize=settings.normalize, task=task, splits=settings.eval_splits, metric=metric)
    per_layer = map_layers(score, [np.asarray(pooled[index]) for index in range(len(layers))], jobs)
    rows = [row | dict(layer=layer, n=len(data.texts), higher_is_better=score_direction(row["metric"])) for layer, (scores, _) in zip(layers, per_layer) for row in scores]
    if not rows:
        raise UserError(f"mteb reported no scores for task '{spec.name}'")
    items = [frame.assign(layer=layer) for layer, (_, frame) in zip(layers, per_layer) if frame is not None]
    frame = pd.DataFrame(rows)
    if items:
        frame = with_item_stderr(frame, pd.concat(items, ignore_index=True), metric, task.metadata.main_score)
    return Scored(frame, pd.concat(items, ignore_index=True) if items else None)


def with_item_stderr(rows: pd.DataFrame, items: pd.DataFrame, metric: str, main: str) -> pd.DataFrame:
    """``rows`` with the main score's ``stderr`` filled from its items where a row has none (mteb gives a spread only
    over a classification task's experiments, and only under the score's own name): per subset, split and layer, the
    spread of the score over resamples of its items (:func:`layerbench.results.items.item_stderr`)."""
    rows = rows.copy()
    for (subset, split), part in items.groupby(["subset", "split"], dropna=False):
        for layer, stderr in item_stderr(part).items():
            where = (rows.subset == subset) & (rows.split == split) & (rows.layer == layer) & rows.metric.isin([metric, "main_score", main]) & rows.stderr.isna()
            rows.loc[where, "stderr"] = stderr
    return rows
