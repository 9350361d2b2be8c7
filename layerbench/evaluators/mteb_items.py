"""Item records of an mteb evaluation: what mteb's own evaluators computed per pair, per test item or per query.

mteb keeps per-item predictions for its ``prediction_folder`` option: each
task type hands them to ``AbsTask._save_task_predictions`` (STS and pair
classification: each pair's similarities; classification: each experiment's
predicted labels), and retrieval hands its per-query scores to
``AbsTask.task_specific_scores``, the hook mteb documents for subclasses.
:class:`PredictionRecorder` wraps those two methods and ``_evaluate_subset``
(for the texts the predictions belong to) on one task instance while it runs,
keeps the predictions in memory instead of writing JSON, and turns them into
item records (:mod:`layerbench.results.items`) of the task's main score, which
the statistic recomputes exactly (tests/test_items.py checks it against mteb's number).

Which main scores get items: STS ``[cosine_|manhattan_|euclidean_]spearman``
and ``pearson``; pair classification ``max_ap`` and ``<scorer>_ap``;
classification ``accuracy``; retrieval ``ndcg_at_k``, ``map_at_k``,
``recall_at_k`` and ``precision_at_k``. Others (clustering's v-measure, a
threshold-tuned F1) have no items, and a comparison of them stays unpaired.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from layerbench.results.items import item_ids

# Pair classification's scorers as mteb names them, each with the prediction key and its sign (+1: higher is more similar).
_PAIR_SCORERS = {"similarity": ("similarity_scores", 1.0), "cosine": ("cosine_scores", 1.0), "manhattan": ("manhattan_distances", -1.0),
                 "euclidean": ("euclidean_distances", -1.0), "dot": ("dot_scores", 1.0)}
# Retrieval main scores -> pytrec_eval's per-query measure.
_RETRIEVAL = {"ndcg_at": "ndcg_cut_", "map_at": "map_cut_", "recall_at": "recall_", "precision_at": "P_"}


class PredictionRecorder:
    """Records one mteb task's per-item predictions while ``mteb.evaluate`` runs it (use as a context manager).

    Args:
        task: the mteb task instance ``mteb.evaluate`` will run (its methods are wrapped on the instance, and restored on exit).
    """

    _WRAPPED = ("_evaluate_subset", "_save_task_predictions", "task_specific_scores")

    def __init__(self, task: Any) -> None:
        self.task = task
        self.current: tuple[Any, str, str] | None = None  # (data split, hf_subset, hf_split) being evaluated
        self.records: list[tuple[str, str, Any, Any]] = []  # (hf_subset, hf_split, data split, predictions)

    def __enter__(self) -> PredictionRecorder:
        task = self.task
        evaluate_subset, specific = task._evaluate_subset, getattr(task, "task_specific_scores", None)

        def evaluate_subset_noting(model: Any, data_split: Any, *args: Any, hf_split: str, hf_subset: str, **kwargs: Any) -> Any:
            self.current = (data_split, hf_subset, hf_split)
            return evaluate_subset(model, data_split, *args, hf_split=hf_split, hf_subset=hf_subset, **kwargs)

        def save_in_memory(predictions: Any, model: Any, prediction_folder: Any, hf_split: str, hf_subset: str) -> None:
            if self.current is not None and task.metadata.type != "Retrieval":  # retrieval's per-query scores come to task_specific_scores
                self.records.append((hf_subset, hf_split, self.current[0], predictions))

        def specific_noting(scores: Any, qrels: Any, results: Any, hf_split: str, hf_subset: str) -> Any:
            if self.current is not None:
                self.records.append((hf_subset, hf_split, self.current[0], scores))
            assert specific is not None
            return specific(scores, qrels, results, hf_split=hf_split, hf_subset=hf_subset)

        # The original _save_task_predictions writes JSON files; while recording, predictions stay in memory.
        task._evaluate_subset, task._save_task_predictions = evaluate_subset_noting, save_in_memory
        if specific is not None:  # retrieval tasks only
            task.task_specific_scores = specific_noting
        return self

    def __exit__(self, *exc: Any) -> None:
        for name in self._WRAPPED:
            self.task.__dict__.pop(name, None)

    def documents(self) -> dict[tuple[str, str], int]:
        """(hf_subset, hf_split) -> how many rows the data split mteb evaluated there has (a clustering task's documents)."""
        return {(subset, split): len(data_split) for subset, split, data_split, _ in self.records if hasattr(data_split, "__len__")}

    def items(self, metric: str) -> pd.DataFrame | None:
        """The recorded predictions as item records of ``metric`` (the rows' name for the task's main score), or None when
        the task's main score has no items (:func:`items_of`)."""
        frames = [items_of(self.task, data_split, predictions, metric, split) for _, split, data_split, predictions in self.records]
        parts = [frame.assign(subset=subset, split=split) for frame, (subset, split, _, _) in zip(frames, self.records) if frame is not None]
        return pd.concat(parts, ignore_index=True) if parts else None


def items_of(task: Any, data_split: Any, predictions: Any, metric: str, hf_split: str = "test") -> pd.DataFrame | None:
    """Item records (``metric, statistic, item, scorer, value, target, prediction``) of one subset and split of ``task``.

    Args:
        task: the mteb task; its ``metadata.main_score`` decides the statistic and which prediction is the value.
        data_split: what mteb's ``_evaluate_subset`` read (a Dataset, a DatasetDict of train and test, or retrieval's dict).
        predictions: what mteb handed to ``_save_task_predictions`` (retrieval: the per-query scores).
        metric: the score rows' name for the main score (``main_score`` or mteb's own name).
        hf_split: the split evaluated (classification's ``data_split`` holds the training split beside it).
    """
    kind, main = task.metadata.type, task.metadata.main_score
    if kind == "STS":
        return _sts_items(task, data_split, predictions, main, metric)
    if kind == "PairClassification":
        return _pair_items(task, data_split, predictions, main, metric)
    if kind == "Classification" and main == "accuracy" and isinstance(predictions, list) and predictions:
        test = data_split[hf_split] if hf_split in data_split else data_split
        return _classification_items(task, test, predictions, metric)
    if kind == "Retrieval":
        return _retrieval_items(data_split, predictions, main, metric)
    return None


def _sts_items(task: Any, data_split: Any, predictions: Any, main: str, metric: str) -> pd.DataFrame | None:
    match = re.fullmatch(r"(?:(cosine|manhattan|euclidean)_)?(spearman|pearson)", main)
    columns = task.column_names
    if match is None or not all(isinstance(c, str) for c in columns):
        return None
    key = {"cosine": "cosine_scores", "manhattan": "manhattan_distances", "euclidean": "euclidean_distances"}.get(match.group(1) or "")
    values = predictions.get(key) if key else (predictions.get("similarity_scores") if predictions.get("similarity_scores") is not None else predictions.get("cosine_scores"))
    gold = [task._normalize(score) for score in data_split["score"]]
    return pd.DataFrame({"metric": metric, "statistic": match.group(2), "item": item_ids(data_split[columns[0]], data_split[columns[1]]),
                         "value": np.asarray(values, dtype=np.float64), "target": np.asarray(gold, dtype=np.float64)})


def _pair_items(task: Any, data_split: Any, predictions: Any, main: str, metric: str) -> pd.DataFrame | None:
    match = re.fullmatch(r"(max|similarity|cosine|manhattan|euclidean|dot)_ap", main)
    first, second = task.input1_column_name, task.input2_column_name
    if match is None or not (isinstance(first, str) and isinstance(second, str)):
        return None
    if len(data_split) == 1:  # mteb 1.x's one-row layout, which mteb unpacks the same way
        from datasets import Dataset

        data_split = Dataset.from_dict(data_split[0])
    ids = item_ids(data_split[first], data_split[second])
    labels = np.asarray(data_split[task.label_column_name], dtype=np.float64)
    scorers = list(_PAIR_SCORERS) if match.group(1) == "max" else [match.group(1)]
    frames = []
    for scorer in scorers:
        key, sign = _PAIR_SCORERS[scorer]
        if predictions.get(key) is None:
            continue
        frames.append(pd.DataFrame({"metric": metric, "statistic": "max_average_precision", "item": ids, "scorer": scorer,
                                    "value": sign * np.asarray(predictions[key], dtype=np.float64), "target": labels}))
    return pd.concat(frames, ignore_index=True) if frames else None


def _classification_items(task: Any, test: Any, predictions: list[Any], metric: str) -> pd.DataFrame | None:
    column = task.input_column_name
    if not isinstance(column, str):
        return None
    labels = np.asarray(test[task.label_column_name])
    predicted = np.asarray(predictions)  # [experiments, N]
    number = _class_numbers(np.concatenate([labels, predicted[0]]))
    return pd.DataFrame({"metric": metric, "statistic": "mean", "item": item_ids(test[column]), "value": (predicted == labels).mean(axis=0),
                         "target": number(labels), "prediction": number(predicted[0])})


def _retrieval_items(data_split: Any, per_query: dict[str, dict[str, float]], main: str, metric: str) -> pd.DataFrame | None:
    match = re.fullmatch(r"(ndcg_at|map_at|recall_at|precision_at)_(\d+)", main)
    if match is None or not per_query:
        return None
    measure = _RETRIEVAL[match.group(1)] + match.group(2)
    queries = data_split["queries"]
    text_of = dict(zip(queries["id"], queries["text"]))
    ids = sorted(per_query)
    return pd.DataFrame({"metric": metric, "statistic": "mean", "item": item_ids([str(text_of.get(q, q)) for q in ids], ids),
                         "value": [float(per_query[q][measure]) for q in ids]})


def _class_numbers(seen: np.ndarray) -> Any:
    """A function mapping class labels to floats: the labels themselves where they are numbers, else their position among the sorted ``seen``."""
    try:
        seen.astype(np.float64)
        return lambda labels: np.asarray(labels).astype(np.float64)
    except (TypeError, ValueError):
        position = {label: float(i) for i, label in enumerate(sorted(set(seen.tolist()), key=str))}
        return lambda labels: np.array([position[label] for label in np.asarray(labels).tolist()], dtype=np.float64)
