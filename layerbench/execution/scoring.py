"""A family's evaluator run on what the family reads (:attr:`~layerbench.families.Family.reads`): one executor per kind of
input, each returning :class:`~layerbench.results.items.Scored` (rows, item records, notes for the manifest).

``states``: the pooled states of the task's texts at the variant's site (and the robustness variants'); ``model``: the
loaded model, which the evaluator runs itself (its forward passes counted). A family that reads ``nothing`` has no
evaluator: its rows are the label-free metrics'.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from layerbench.capture import CaptureStats, counting_passes
from layerbench.data.dataset import TextDataset
from layerbench.execution.task_capture import TaskCapture
from layerbench.execution.variants import Variant
from layerbench.families import EvaluatorContext
from layerbench.models import ModelHandle
from layerbench.results.items import Scored, as_scored


@dataclass(frozen=True)
class EvaluatorInputs:
    """Everything an executor may hand an evaluator: the task's data, the variant, the run's seed, the model, the task's capture,
    the worker processes a states evaluator may use, and the counters a model evaluator's passes add to."""

    data: TextDataset
    variant: Variant
    seed: int
    handle: ModelHandle
    task: TaskCapture
    jobs: int
    stats: CaptureStats


def score_states(evaluator: Callable[[EvaluatorContext], Any], inputs: EvaluatorInputs) -> Scored:
    """The evaluator on the variant's pooled states ``[K, N, D]`` (clean, and each robustness variant's), layer by layer."""
    site = inputs.task.site(inputs.variant)
    context = EvaluatorContext(inputs.data, inputs.variant.spec, inputs.seed, states=inputs.task.states(inputs.variant), layers=site.layers,
                               n_layers=inputs.handle.n_layers, jobs=inputs.jobs)
    return as_scored(evaluator(context))


def score_model(evaluator: Callable[[EvaluatorContext], Any], inputs: EvaluatorInputs) -> Scored:
    """The evaluator with the loaded model (patching, generation, the logit lens); its forward passes are counted in the run's stats."""
    context = EvaluatorContext(inputs.data, inputs.variant.spec, inputs.seed, handle=inputs.handle, n_layers=inputs.handle.n_layers)
    with counting_passes(inputs.handle, inputs.stats):
        result = evaluator(context)
    return as_scored(result)


# Family.reads -> its executor.
EXECUTORS: dict[str, Callable[[Callable[[EvaluatorContext], Any], EvaluatorInputs], Scored]] = {"states": score_states, "model": score_model}
