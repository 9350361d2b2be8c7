"""The run manifest as a typed model: what the runner writes beside the rows, and what the site and ``compare`` read.

One manifest per (model, run), ``<output>/<model>/runs/<run_id>.json``. Every
field has a default, so a manifest written by an older layerbench (without
the platform fingerprint, the lock or item rows) still loads; fields a
reader does not know are kept (``extra="allow"``), so nothing is lost when
a manifest is read and written again.
"""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from layerbench.errors import UserError


class Part(str, Enum):
    """The parts a task's results come in, each its own file, hash and resume: the evaluator's ``scores``, the label-free
    ``metrics``, and two companions written with the scores: their per-item records (``items``) and the per-layer
    ``sketches`` a similarity run keeps for comparisons across models and checkpoints (:mod:`layerbench.results.sketches`);
    and one derived from every model's sketches, not written by a model's run: a similarity task's rows against the other
    models (``across``, :mod:`layerbench.across_models`); and one derived from the item records: each task's
    selection-honest best layer (``honest``, :mod:`layerbench.honest_best`)."""

    SCORES = "scores"
    METRICS = "metrics"
    ITEMS = "items"
    SKETCHES = "sketches"
    ACROSS = "across"
    HONEST = "honest"


# The parts an evaluator returns beside its scores, written first, with the scores' config hash, and removed when a
# run's scores come without them.
COMPANIONS = (Part.ITEMS, Part.SKETCHES)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class VariantRecord(_Open):
    """One variant of a task in a run: its protocol, site and pooling, rows per part, and the config hash of each part it wrote."""

    protocol: str = "layerbench"
    site: str = "residual"
    pooling: str | None = None
    rows: dict[str, int] = Field(default_factory=dict)
    config_hashes: dict[str, str] = Field(default_factory=dict)
    robustness: list[str] | None = None
    metrics: dict[str, Any] | None = None  # names, sampled texts, views per text, notes
    evaluator_notes: dict[str, Any] | None = None  # what the evaluator said of its items (EvaluatorContext.notes)


class TaskRecord(_Open):
    """One task in a run: its family and main score, spec version, size, data provenance, variants, passes and stage seconds."""

    family: str | None = None
    main_score: str | None = None
    version: int | None = None
    n: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, VariantRecord] = Field(default_factory=dict)
    forward_passes: int = 0
    seconds: dict[str, float] = Field(default_factory=dict)


class ModelRecord(_Open):
    """The model a run read (``ModelHandle.provenance``): name, revision, architecture, size, checksums, the copy it came from."""

    name: str = "?"
    revision: str | None = None
    model_type: str | None = None
    n_layers: int | None = None
    hidden_size: int | None = None
    parameters: int | None = None
    fingerprint: str | None = None
    dtype: str | None = None
    device: str | None = None


class Environment(_Open):
    """The software and machine (:func:`layerbench.environment.environment`)."""

    python: str | None = None
    platform: str | None = None
    packages: dict[str, str | None] = Field(default_factory=dict)
    git_sha: str | None = None
    cuda: str | None = None
    gpu: str | None = None
    platform_fingerprint: dict[str, Any] | None = None
    lock: dict[str, Any] | None = None
    reproducibility: dict[str, Any] = Field(default_factory=dict)


class Process(_Open):
    """Who writes the manifest: a later run marks one left ``running`` by a process that is gone as ``interrupted``."""

    host: str | None = None
    pid: int | None = None


class Manifest(_Open):
    """One model's part of a run.

    ``status``: ``running`` while it goes, then ``complete``, ``failed`` or
    ``interrupted``. ``tasks``: by task name. ``timings_seconds``: per stage
    (``load_model``, ``data``, ``capture``, ``evaluate``, ``metrics``), summed over tasks.
    """

    run_id: str
    status: str = "unknown"
    interrupted_noticed_at: str | None = None  # when a later run found this one's process gone
    error: str | None = None  # a failed run: the error line that stopped it
    error_task: str | None = None  # and the task it came from
    process: Process = Field(default_factory=Process)
    written_at: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str | None = None
    model: ModelRecord = Field(default_factory=ModelRecord)
    environment: Environment = Field(default_factory=Environment)
    tasks: dict[str, TaskRecord] = Field(default_factory=dict)
    timings_seconds: dict[str, float] = Field(default_factory=dict)
    capture: dict[str, Any] = Field(default_factory=dict)
    forward_passes: int = 0

    def to_json(self) -> bytes:
        """The manifest as indented JSON (what ``runs/<run_id>.json`` holds)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, default=str).encode()

    @property
    def platform_id(self) -> str | None:
        """The platform fingerprint's id (None for a manifest written before fingerprints were recorded)."""
        return (self.environment.platform_fingerprint or {}).get("id")


def parse_manifest(text: str | bytes, where: str | Path) -> Manifest:
    """A manifest from its JSON.

    Raises:
        UserError: not JSON, or not a manifest (no ``run_id``, a field of the wrong type); the message names ``where``.
    """
    try:
        return Manifest.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise UserError(f"corrupt run manifest '{where}' ({str(exc).splitlines()[0]})") from None
