"""The registry of layer-selection methods: ``layerbench pick --method NAME`` and the rows of the scored table.

A method either picks from one curve alone (``pick``: a curve's rows, without ``score``, to a layer) or is learned
(``fit``: training rows with their scores to such a picker), and then says what it is trained on (``holdout``):
``model`` (leave one model out: a curve's pick is learned on the other models' curves, every task family) or
``family`` (leave one task family out: learned on the other families' curves, every model). The ``oracle`` reads the
labels of the curve it picks for and is listed only as the reference the others are scored against.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from layerbench.errors import UserError
from layerbench.selection import learned, rules

CurvePicker = Callable[[pd.DataFrame], int]


@dataclass(frozen=True)
class Method:
    """One layer-selection method.

    Attributes:
        name: what ``--method`` and the rows call it.
        kind: ``baseline`` (last, middle), ``metric`` (a label-free metric's extreme), ``paper`` (a published rule),
            ``learned`` or ``oracle``.
        source: where it comes from (a paper, or "layerbench").
        description: one line.
        reads: the label-free metrics it reads ("depth" for the layer's relative depth).
        pick: a curve's rows (sorted by layer, no ``score``) -> a layer, for a method that needs no training.
        fit: training rows (with ``score``) -> such a picker, for a learned one.
        holdout: what a learned method's training leaves out: ``model`` or ``family`` (None for the others).
        uses_labels: True for the oracle alone: it reads the scores of the curve it picks for.
        highest: for a method that picks one metric's extreme (``reads`` names it), True where it picks the highest
            value, False the lowest; None for the others. Its Spearman correlation with the score is signed by it.
    """

    name: str
    kind: str
    source: str
    description: str
    reads: tuple[str, ...] = ()
    pick: CurvePicker | None = None
    fit: Callable[[pd.DataFrame], CurvePicker] | None = None
    holdout: str | None = None
    uses_labels: bool = False
    highest: bool | None = None


def _layers(curve: pd.DataFrame) -> np.ndarray:
    return curve.layer.to_numpy(int)


def _extreme(metric: str, highest: bool, curve: pd.DataFrame) -> int:
    return rules.extreme_layer(_layers(curve), curve[metric].to_numpy(float), highest)


def _oracle(curve: pd.DataFrame) -> int:
    return rules.extreme_layer(_layers(curve), curve.score.to_numpy(float), highest=True)


def all_methods(metrics: list[str] | None = None) -> dict[str, Method]:
    """Every method, by name: the baselines, each metric's extreme (its declared direction; both for a descriptive
    metric), the published rules, the learned pickers and the oracle. ``metrics``: the label-free metrics the rows
    have (default: every registered one)."""
    from layerbench.metrics import list_metrics

    infos = [info for info in list_metrics() if metrics is None or info.name in metrics]
    names = [info.name for info in infos]
    found = [
        Method("last", "baseline", "layerbench", "the last layer, what a user takes by default", ("depth",), pick=lambda c: rules.last_layer(_layers(c))),
        Method("middle", "baseline", "layerbench", "the layer nearest half the depth", ("depth",), pick=lambda c: rules.middle_layer(_layers(c))),
        Method("learned-depth", "learned", "layerbench", "the relative depth of least regret on the other models' curves of the task's family",
               ("depth",), fit=learned.fit_fixed_depth, holdout="model"),
    ]
    for info in infos:
        directions = [info.higher_is_better] if info.higher_is_better is not None else [True, False]
        for highest in directions:
            said = "declared: higher is better" if info.higher_is_better else "declared: lower is better" if info.higher_is_better is False else "descriptive"
            found.append(Method(f"{info.name}-{'max' if highest else 'min'}", "metric", "layerbench",
                                f"the layer of {'highest' if highest else 'lowest'} {info.name} ({said})", (info.name,), pick=partial(_extreme, info.name, highest), highest=highest))
    if "intrinsic_dimension" in names:
        found += [
            Method("valeriani2023", "paper", "Valeriani et al., NeurIPS 2023", "the intrinsic dimension's minimum after its first peak",
                   ("intrinsic_dimension",), pick=lambda c: rules.id_minimum_after_first_peak(_layers(c), c.intrinsic_dimension.to_numpy(float))),
            Method("cheng2025", "paper", "Cheng et al., ICLR 2025", "the onset of the intrinsic dimension's first peak (half its rise)",
                   ("intrinsic_dimension",), pick=lambda c: rules.id_peak_onset(_layers(c), c.intrinsic_dimension.to_numpy(float))),
        ]
    if "anisotropy" in names:
        # The mean pairwise cosine distance is 1 - anisotropy (the mean pairwise cosine similarity): its maximum is anisotropy's minimum.
        found.append(Method("li2025", "paper", "Li et al., 2025", "the layer of largest mean pairwise cosine distance (lowest anisotropy)",
                            ("anisotropy",), pick=partial(_extreme, "anisotropy", False), highest=False))
    if names:
        reads = ("depth", *names)
        found += [
            Method("learned-lomo", "learned", "layerbench", "gradient-boosted regression of a layer's score (in its curve's range) on its depth, "
                   "standardized label-free metrics and task family, trained on the other models", reads,
                   fit=partial(learned.fit_ranker, metrics=names, with_family=True), holdout="model"),
            Method("learned-lofo", "learned", "layerbench", "the same regression without the family, trained on the other task families (every model)",
                   reads, fit=partial(learned.fit_ranker, metrics=names, with_family=False), holdout="family"),
        ]
    found.append(Method("oracle", "oracle", "layerbench", "the best layer by the task's own labels (the reference, not a label-free pick)",
                        ("score",), pick=_oracle, uses_labels=True))
    return {m.name: m for m in found}


def get_method(name: str, metrics: list[str] | None = None) -> Method:
    """The method ``name``; an unknown one is a :class:`UserError` naming the known ones."""
    methods = all_methods(metrics)
    if name not in methods:
        raise UserError(f"unknown layer-selection method '{name}'; known: {', '.join(methods)}")
    return methods[name]
