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
name it; see docs/tasks.md, "Adding a task family".
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from layerbench.errors import UserError

__all__ = ["OURS", "EvaluatorContext", "Family", "Headline", "Protocol", "ProtocolSettings", "Strict", "add_protocol", "all_families", "all_headlines",
           "get_family", "register"]


class Strict(BaseModel):
    """A settings model that refuses unknown fields (a misspelt knob is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Headline:
    """One number a family (or a paper's protocol) shows per task on the leaderboard, declared once: the summary table
    (:func:`layerbench.summary`), the site's index, the README's table and the regression gate read it from here.

    Attributes:
        column: the summary table's column, and the index column's id (under a paper protocol, ``column@protocol``).
        title: the column's title ("fix rate"); under a paper protocol, the title and the protocol's name in parentheses.
        about: what it is, in a sentence or two, for the index's header (the family's group says its headlines' prose).
        metric: the summary row (``layer`` null) whose value it is (``oracle_fix_rate``); None: a column the summary
            computes from the layer rows (``gain``).
        statistic: how the index aggregates a model's tasks: ``mean``, or ``count_beyond_zero`` ("k/n": the tasks whose
            95% interval lies above 0, ``<column>_low > 0``; a value above 0 by noise alone is not counted).
        rests_on: what its ``n`` counts, for prose ("queries", "paths").
        min_n: fewer items than this and the headline is withheld (a rate over a handful of queries moves by more
            than 0.05 with one query: not a number to rank models by); None: no minimum.
        interval: how its 95% interval is drawn: ``normal`` (value +- 1.96 x the row's ``stderr``; none without one) or
            ``wilson`` (a share of ``n`` items: Wilson's score interval, which stays inside [0, 1] on few items).
    """

    column: str
    title: str
    about: str = ""
    metric: str | None = None
    statistic: Literal["mean", "count_beyond_zero"] = "mean"
    rests_on: str = "items"
    min_n: int | None = None
    interval: Literal["normal", "wilson"] = "normal"

    @property
    def key(self) -> str:
        """The index column's id under ours: the column, with the statistic where it is not the mean (``honest_gain_count_beyond_zero``)."""
        return self.column if self.statistic == "mean" else f"{self.column}_{self.statistic}"


@dataclass(frozen=True)
class Protocol:
    """A named way to run one family's tasks: ours, or a paper's released code, one option away.

    A protocol fixes how a family measures: which capture site and pooling give
    a layer's vector, the family settings that follow the paper's code (split,
    prompts, answer matching, read position, calibration, sampling), and, where
    the paper's procedure is not ours with other settings, the function that runs it.
    ``layerbench run --protocol NAME`` (or a spec's ``evaluator: {protocol: NAME}``)
    runs a task so; every row carries its ``protocol`` and ``site``.

    Attributes:
        name: what ``--protocol`` takes and rows carry (unique over all families).
        site: the capture site that gives a layer's vector (None: the task's).
        pooling: the pooling (None: the task's).
        settings: family settings it fixes, over the spec's (its ``protocol`` is set to ``name``).
        reference: the paper, its repository at a commit, and the files read.
        evaluator: ``"module:function"`` that runs it, with the family evaluator's signature (None: the family's evaluator).
        family: the family it belongs to (set when it is added to one; None: ours, every family's).
        headlines: what the leaderboard shows of the family's tasks under it: None, the family's headlines; else these.
    """

    name: str
    site: str | None = None
    pooling: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    evaluator: str | None = None
    family: str | None = None
    headlines: tuple[Headline, ...] | None = None


OURS = Protocol("layerbench", reference="layerbench's defaults (docs/protocols.md: where they differ from each paper, and why)")


class ProtocolSettings(Strict):
    """The settings of a family that has protocols: ``protocol`` is ours or one of the family's (:attr:`Family.protocols`).

    A protocol is its settings: settings made with a protocol's name start from the settings its record fixes
    (:attr:`Protocol.settings`), under any that are given, so settings named after a paper's protocol are that paper's
    split, prompts and answer rule. Evaluators read the settings, never the name. The names are read from the registry when a spec
    is checked, so a protocol added to a family later (:func:`add_protocol`) is accepted without touching the settings model.
    """

    protocol: str = OURS.name
    family_name: ClassVar[str | None] = None  # set by :func:`register`

    @model_validator(mode="before")
    @classmethod
    def _the_protocol_fixes_its_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict) or cls.family_name not in _FAMILIES or not isinstance(data.get("protocol"), str):
            return data
        protocol = _FAMILIES[cls.family_name].protocol(data["protocol"])
        return {**protocol.settings, **data} if protocol is not None else data

    @field_validator("protocol")
    @classmethod
    def _a_protocol_of_the_family(cls, value: str) -> str:
        if cls.family_name is None or cls.family_name not in _FAMILIES:
            return value
        names = [OURS.name, *(p.name for p in _FAMILIES[cls.family_name].protocols)]
        if value not in names:
            raise ValueError("Input should be " + ", ".join(repr(n) for n in names[:-1]) + f" or {names[-1]!r}" if len(names) > 1 else f"Input should be {names[0]!r}")
        return value


@dataclass(frozen=True)
class EvaluatorContext:
    """Everything an evaluator is given, as one object: a family's evaluator is ``evaluate(context) -> rows``.

    Attributes:
        data: the task's ``TextDataset`` (texts, labels, records, provenance).
        spec: the ``TaskSpec`` under the variant's protocol; ``spec.settings`` is the family's settings model.
        seed: the run's seed (splits, permutations, sampling derive from it).
        states: a family that reads ``states``: variant (``clean``, a robustness variant) -> pooled states ``[K, N, D]``.
        layers: the layer number of each of the K rows of the states (default ``0..K-1``).
        n_layers: the model's L (depth = layer / L), also when ``layers`` is a subset.
        jobs: worker processes the evaluator may spread layers over (its rows must not depend on it).
        handle: a family that reads ``model``: the loaded ``ModelHandle`` (patching, generation, the logit lens).

    What the evaluator wants the run manifest to say of the variant (items it dropped and why) it returns, as
    ``Scored(rows, items, notes)`` (:class:`layerbench.results.items.Scored`).
    """

    data: Any
    spec: Any
    seed: int = 0
    states: Mapping[str, Any] | None = None
    layers: Sequence[int] | None = None
    n_layers: int | None = None
    jobs: int = 1
    handle: Any = None

    @property
    def settings(self) -> Any:
        """The family's settings of this variant (``spec.settings``)."""
        return self.spec.settings


# ``evaluate(context) -> rows``: a pandas DataFrame of rows, or ``layerbench.results.Scored`` (rows, item records, notes).
Evaluator = Callable[[EvaluatorContext], Any]


@dataclass(frozen=True)
class Family:
    """One task family.

    Attributes:
        name: what a task spec's ``family:`` says.
        description: one line for listings.
        settings: the pydantic model of a spec's ``evaluator:`` block; it has
            a ``protocol`` field (``layerbench``, or a paper's protocol).
        reads: ``states``: the evaluator's :class:`EvaluatorContext` carries the
            pooled states of the task's texts (``states``, ``layers``, ``n_layers``,
            ``jobs``); ``model``: it carries the loaded model (``handle``), which the
            evaluator runs itself (patching, generation, the logit lens);
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
        headlines: what the leaderboard shows per task of the family (:class:`Headline`): the concept depth of a probe
            task, the back-patching fix rate.
        protocols: the papers' protocols of this family (:class:`Protocol`), the first its paper's
            (``--protocol paper``); ours (:data:`OURS`) applies to every family.
        preflight: ``"module:function"`` that checks a task of the family before any model loads or text is read,
            ``(spec, limit) -> [problem, ...]`` (the spec under its variant's protocol; ``limit`` the run's ``--limit``);
            None: nothing to check.
        across_models: ``"module:function"`` that rewrites a task's rows across models from what every model's run
            stored, ``(output, task) -> [path, ...]``; called after every run of one of the family's tasks. None: none.
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
    headlines: tuple[Headline, ...] = ()
    classes: bool = False
    protocols: tuple[Protocol, ...] = ()
    preflight: str | None = None
    across_models: str | None = None

    def load_evaluator(self, protocol: str = OURS.name) -> Evaluator | None:
        """The function that runs the family's tasks under ``protocol`` (the protocol's own, else the family's evaluator), imported now
        (its module may import torch, mteb, scikit-learn)."""
        own = next((p.evaluator for p in self.protocols if p.name == protocol), None)
        return _imported(own or self.evaluator)

    def problems_before_loading(self, spec: Any, limit: int | None) -> list[str]:
        """What is wrong with running ``spec`` at ``limit``, from the spec and the options alone (:attr:`preflight`)."""
        check = _imported(self.preflight)
        return list(check(spec, limit)) if check is not None else []

    def protocol(self, name: str) -> Protocol | None:
        """The protocol ``name`` of this family (ours for ``layerbench``), or None when it has no such protocol."""
        return OURS if name == OURS.name else next((p for p in self.protocols if p.name == name), None)

    def headlines_under(self, protocol: str) -> tuple[Headline, ...]:
        """What the leaderboard shows of the family's tasks under ``protocol``: its record's headlines, else the family's."""
        record = self.protocol(protocol)
        return record.headlines if record is not None and record.headlines is not None else self.headlines

    def write_across_models(self, output: Any, task: str) -> list[str]:
        """Rewrite ``task``'s rows across models under ``output`` (:attr:`across_models`); nothing for a family without them."""
        write = _imported(self.across_models)
        return list(write(output, task)) if write is not None else []

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
    family = dataclasses.replace(family, protocols=tuple(_owned(p, family.name) for p in family.protocols))
    if family.name in _FAMILIES and _FAMILIES[family.name] != family:
        raise ValueError(f"task family '{family.name}' is registered twice")
    if (family.reads == "nothing") != (family.evaluator is None):
        raise ValueError(f"task family '{family.name}': an evaluator goes with reads='states' or 'model', none with 'nothing'")
    _check_protocol_names(family)
    if issubclass(family.settings, ProtocolSettings):
        family.settings.family_name = family.name
    _FAMILIES[family.name] = family
    return family


def _owned(protocol: Protocol, family: str) -> Protocol:
    """``protocol`` as the family ``family``'s: its family named, its settings naming it."""
    return dataclasses.replace(protocol, family=family, settings={**protocol.settings, "protocol": protocol.name})


def _check_protocol_names(family: Family) -> None:
    taken = {p.name: f.name for f in _FAMILIES.values() if f.name != family.name for p in f.protocols} | {OURS.name: "every family"}
    for protocol in family.protocols:
        if protocol.name in taken:
            raise ValueError(f"protocol '{protocol.name}' of family '{family.name}' is already {taken[protocol.name]}'s")


def add_protocol(family: str, protocol: Protocol) -> Protocol:
    """Give the registered family ``family`` another protocol (a paper's, defined outside its module); returns it as registered.

    The family's settings then accept its name, ``--protocol`` runs it, and its rows carry it.
    """
    record = get_family(family)
    if any(p.name == protocol.name for p in record.protocols):
        raise ValueError(f"family '{family}' already has a protocol '{protocol.name}'")
    del _FAMILIES[family]
    try:
        register(dataclasses.replace(record, protocols=(*record.protocols, protocol)))
    except ValueError:
        _FAMILIES[family] = record
        raise
    return get_family(family).protocols[-1]


def all_headlines() -> list[Headline]:
    """Every headline that a summary row gives (``metric`` set), of every family and protocol, once per metric, read now."""
    found: dict[str, Headline] = {}
    for family in all_families().values():
        for protocol in (OURS, *family.protocols):
            for headline in family.headlines_under(protocol.name):
                if headline.metric is not None:
                    found.setdefault(headline.metric, headline)
    return list(found.values())


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
