"""The registry of task families: one record per family says everything the rest of layerbench needs to know about it.

A family is a way of reading a model layer by layer (probing, MTEB, the
label-free metric suite, back-patching, internal consistency). Its record
holds its settings model (the ``evaluator:`` block of a task spec), what its
evaluator reads (pooled states of the task's texts, or the loaded model), the
evaluator itself (a ``module:function`` name imported on first use, so that
listing and validating tasks import no torch), the data sources it accepts,
and the summary metrics the leaderboard headlines for its tasks.

Adding a family is one module in this package that calls :func:`register`
(modules here are imported when the package is), and task YAML files that
name it; see the README's "Adding a task family".
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from layerbench.errors import UserError

__all__ = ["Family", "Strict", "all_families", "get_family", "register"]


class Strict(BaseModel):
    """A settings model that refuses unknown fields (a misspelt knob is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid")


Evaluator = Callable[..., Any]  # returns the rows as a pandas DataFrame (pandas is not imported here)


@dataclass(frozen=True)
class Family:
    """One task family.

    Attributes:
        name: what a task spec's ``family:`` says.
        description: one line for listings.
        settings: the pydantic model of a spec's ``evaluator:`` block; it has
            a ``protocol`` field (``layerbench``, or a paper's protocol).
        reads: ``states``: the evaluator takes ``(states, data, spec, seed,
            layers=..., n_layers=..., jobs=...)``, where ``states`` maps a variant (``clean``, a
            robustness variant) to pooled states ``[K, N, D]`` of the task's
            texts, ``layers`` numbers their K rows, ``n_layers`` is the model's L
            (depth = layer / L) and ``jobs`` the worker processes it may evaluate layers in
            (these two are passed only to an evaluator that names them); ``model``: it takes ``(handle, data, spec, seed)`` and runs
            the model itself (patching, generation, the logit lens);
            ``nothing``: no evaluator, the task's rows are the label-free
            metric suite's.
        evaluator: ``"module:function"`` of the evaluator (None for ``nothing``).
        causal_lm_only: its evaluator needs a causal language model with an
            unembedding; encoders skip its scores with a reason.
        robustness: it accepts the robustness variants (``--robustness``).
        sources: the data sources its tasks may read (None: any).
        model_texts: ``"module:function"`` that turns the task's data into the
            texts a given model reads, ``(data, prompts) -> data`` where
            ``prompts`` is the model's prompt table (the e5 prefixes of an mteb
            task); None: every model reads the data's texts as they are.
        headlines: summary metrics (rows with a null layer) that
            :func:`layerbench.summary` and the leaderboard show per task, as
            ``(metric, column)``: the converging depth of a probe task as ``concept_depth``.
        classes: its evaluator reads the labels as classes, so a task needs at
            least two (probing, internal consistency); otherwise labels are
            whatever the family makes of them (a two-hop query's relation pair).
        headline_min_n: ``(metric, n)``: a headline resting on fewer than n
            items (its summary row's ``n``) is not shown as one; its note says why
            (the back-patching fix rate over a handful of wrong queries).
    """

    name: str
    description: str
    settings: type[BaseModel]
    reads: Literal["states", "model", "nothing"]
    evaluator: str | None = None
    causal_lm_only: bool = False
    robustness: bool = False
    sources: tuple[str, ...] | None = None
    model_texts: str | None = None
    headlines: tuple[tuple[str, str], ...] = ()
    headline_min_n: tuple[tuple[str, int], ...] = ()
    classes: bool = False

    def load_evaluator(self) -> Evaluator | None:
        """The evaluator function, imported now (its module may import torch, mteb, scikit-learn)."""
        return _imported(self.evaluator)

    def texts_for_model(self, data: Any, prompts: dict[str, str]) -> Any:
        """``data`` as a model with prompt table ``prompts`` reads it (``data`` itself when the family has no ``model_texts``)."""
        prepare = _imported(self.model_texts)
        return prepare(data, prompts) if prepare is not None and prompts else data


def _imported(name: str | None) -> Callable[..., Any] | None:
    """The function a ``"module:function"`` name points to, imported now; None for None."""
    if name is None:
        return None
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the registry (a second family of the same name is a programming error)."""
    if family.name in _FAMILIES and _FAMILIES[family.name] != family:
        raise ValueError(f"task family '{family.name}' is registered twice")
    if (family.reads == "nothing") != (family.evaluator is None):
        raise ValueError(f"task family '{family.name}': an evaluator goes with reads='states' or 'model', none with 'nothing'")
    _FAMILIES[family.name] = family
    return family


def all_families() -> dict[str, Family]:
    """Every registered family by name, in name order."""
    return dict(sorted(_FAMILIES.items()))


def get_family(name: str) -> Family:
    """The family called ``name``; an unknown one is a :class:`UserError` naming the known ones."""
    if name not in _FAMILIES:
        raise UserError(f"unknown task family '{name}'; known: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def check_family_name(name: Any) -> str:
    """``name`` if a family of that name is registered, else ValueError in pydantic's words for a choice (for spec validation)."""
    names = sorted(_FAMILIES)
    if name not in _FAMILIES:
        raise ValueError("Input should be " + ", ".join(repr(n) for n in names[:-1]) + f" or {names[-1]!r}")
    return name
