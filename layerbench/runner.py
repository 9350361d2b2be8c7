"""The per-model runner that every executor drives: task variants, their identity hashes, the per-task pipeline and the manifest.

Data flows one way: spec -> data -> capture -> evaluator and metrics -> rows -> store.
Each (model, task variant) has up to two parts, stored and resumed separately:
the evaluator's scores and the label-free metric suite's rows.

The local executor (:func:`layerbench.api.run`) and the Ray executor
(:mod:`layerbench.ray_executor`) both import this module; it imports neither.
"""
from __future__ import annotations

import os
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerbench.capture import CaptureStats
from layerbench.choices import DEFAULT_SITE
from layerbench.data import load_task_data
from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.execution.scoring import EXECUTORS, EvaluatorInputs
from layerbench.execution.task_capture import TaskCapture, TaskTexts, plan_capture, task_texts
from layerbench.execution.variants import Variant, WorkItem
from layerbench.families import Family, get_family
from layerbench.fingerprint import hash_value
from layerbench.metrics.suite import METRICS_VERSION, MetricPlan, evaluate_metrics
from layerbench.models import ModelHandle
from layerbench.models.loading import load_checkpoint
from layerbench.models.resolve import Checkpoint
from layerbench.parallel import default_jobs
from layerbench.results import ResultStore, complete_rows
from layerbench.results.items import complete_items
from layerbench.results.manifest import COMPANIONS, Environment, Manifest, ModelRecord, Part, Process, TaskRecord, VariantRecord
from layerbench.results.sketches import complete_sketches
from layerbench.run_config import RunConfig
from layerbench.specs import TaskSpec
from layerbench.specs.protocols import resolve_protocol

__all__ = ["ModelRunner", "RunSummary", "TaskPlan", "TaskTexts", "Variant", "WorkItem", "plan_task", "seed_everything", "task_config_hash", "task_texts",
           "task_variants"]


@dataclass
class RunSummary:
    """What a run did: per (model, task) one of ``done`` / ``skipped``, and where things went."""

    output: Path | str  # a folder, or an fsspec URL
    run_id: str
    status: dict[str, dict[str, str]] = field(default_factory=dict)
    forward_passes: int = 0
    manifests: list[Path | str] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch from the run's one seed."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def task_variants(spec: TaskSpec, config: RunConfig) -> tuple[list[Variant], list[str]]:
    """The variants a task runs in, and the protocols asked for that its family has none of.

    Protocols: ``config.protocols`` (``paper`` = the family's paper protocol),
    else the spec's own. Sites: ``config.sites``, else the spec's ``site``,
    else the protocol's, else ``residual``. Pooling: ``config.pooling``, else
    the protocol's, else the spec's.
    """
    variants: dict[tuple[str, str], Variant] = {}
    missing = []
    for name in config.protocols or (spec.protocol,):
        protocol = resolve_protocol(name, spec.family)
        if protocol is None:
            missing.append(name)
            continue
        under = spec.under(protocol.name, protocol.settings)
        pooling = config.pooling or protocol.pooling or spec.pooling
        for site in config.sites or (spec.site or protocol.site or DEFAULT_SITE,):
            variants.setdefault((protocol.name, site), Variant(protocol.name, under, site, pooling))
    return list(variants.values()), missing


def task_config_hash(variant: Variant, config: RunConfig, checkpoint: Checkpoint, part: str = "scores") -> str:
    """Identity of one (model, task variant) part's rows: what would change its numbers.

    The ``metrics`` part also depends on the chosen metrics, the prompt sample
    size and the metric code's version; the ``scores`` part on none of them.
    """
    identity: dict[str, Any] = {
        "task": variant.spec.model_dump(),
        "model": checkpoint.name,
        "revision": checkpoint.revision,
        "limit": config.limit,
        "seed": config.seed,
        "dtype": config.dtype,
        "max_length": config.max_length,
        "pooling": variant.pooling,
        "protocol": variant.protocol,
        "site": variant.site,
    }
    if config.layers:  # a subset of layers: other rows, and depth summaries read off those layers alone
        identity["layers"] = list(config.layers)
    if checkpoint.prompts and get_family(variant.spec.family).model_texts:  # the model reads prefixed texts
        identity["prompts"] = checkpoint.prompts
    if part == "scores" and get_family(variant.spec.family).robustness and config.robustness:
        identity["robustness"] = list(config.robustness)
    if part == "metrics":
        identity |= {"part": part, "metrics": list(config.metrics or ()), "metric_samples": config.metric_samples, "metrics_version": METRICS_VERSION}
    return hash_value(identity)


# The identity an item record (a layer sketch) shares with its score rows.
_ITEM_IDENTITY = ("model", "revision", "task", "subset", "split", "run_id", "protocol", "site")
_SKETCH_IDENTITY = ("model", "revision", "task", "protocol", "site", "n_layers", "run_id")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class TaskPlan:
    """What one task needs in a run (:func:`plan_task`).

    Attributes:
        spec: the task.
        variants: every variant the config asks for (protocols the family has, times sites).
        missing: protocols asked for that the task's family has none of.
        hashes: the config hash of every part the variants want, by (variant suffix, part).
        work: the parts not stored yet with those hashes (or to redo: ``--overwrite``, ``--update``).
    """

    spec: TaskSpec
    variants: list[Variant]
    missing: list[str]
    hashes: dict[tuple[str, Part], str]
    work: list[WorkItem]


# (variant suffix, part) -> (the stored part's config hash or None, where it is stored): what plan_task knows of the results folder.
StoredLookup = Callable[[str, Part], tuple[str | None, str]]


def needs_run(stored: str | None, wanted: str, config: RunConfig, where: str) -> bool:
    """Whether a part must run: not stored yet, or stored and ``--overwrite``, or stored from another config and ``--update``.

    Raises:
        UserError: stored from another config, with neither option (``where`` names the file).
    """
    if stored is None or config.overwrite:
        return True
    if stored != wanted:
        if config.update:
            return True
        raise UserError(f"{where} from another config; pass --update to replace what changed, --overwrite to redo everything, or choose another --output")
    return False


def plan_task(spec: TaskSpec, config: RunConfig, checkpoint: Checkpoint, metrics: MetricPlan, stored: StoredLookup) -> TaskPlan:
    """The variants and parts of ``spec`` that a run of ``config`` on ``checkpoint`` must compute: a pure function of its inputs.

    A family with an evaluator wants its scores; the label-free metrics are
    wanted once per (site, pooling), by the first variant with that pair.
    ``stored`` says what the results folder holds (:data:`StoredLookup`).

    Raises:
        UserError: a part is stored from another config and the config says neither ``overwrite`` nor ``update``.
    """
    family = get_family(spec.family)
    variants, missing = task_variants(spec, config)
    owners: dict[tuple[str, str], str] = {}
    for v in variants:
        owners.setdefault((v.site, v.capture_pooling(checkpoint.pooling)), v.suffix)
    hashes: dict[tuple[str, Part], str] = {}
    work: list[WorkItem] = []
    for v in variants:
        owns_metrics = owners[(v.site, v.capture_pooling(checkpoint.pooling))] == v.suffix
        wanted = [part for part, on in ((Part.SCORES, family.reads != "nothing"), (Part.METRICS, bool(metrics.metrics) and owns_metrics)) if on]
        parts = []
        for part in wanted:
            hashes[(v.suffix, part)] = task_config_hash(v, config, checkpoint, part)
            held, where = stored(v.suffix, part)
            if needs_run(held, hashes[(v.suffix, part)], config, f"{where} holds {part.value} of '{spec.name}{v.suffix}'"):
                parts.append(part)
        if parts:
            work.append(WorkItem(v, tuple(parts)))
    return TaskPlan(spec, variants, missing, hashes, work)


class ModelRunner:
    """One model's part of a run: for each task it plans (:func:`plan_task`), executes (:meth:`execute`: data, captures,
    evaluators and metrics, to rows) and records (:meth:`record`: rows, then the manifest); the model is loaded when a task first needs it.

    The local executor makes one per model in turn; the Ray executor makes one
    inside each model's worker, so a model is loaded once per worker and
    reused across its tasks. A runner made again for the same run (a worker
    restarted after a crash) picks up the manifest its predecessor wrote, and
    skips every task part already stored with the same config.
    """

    def __init__(self, checkpoint: Checkpoint, config: RunConfig, plan: MetricPlan, run_id: str, env: dict[str, Any], label: str) -> None:
        self.checkpoint, self.config, self.plan, self.run_id, self.env, self.label = checkpoint, config, plan, run_id, env, label
        self.store = ResultStore(config.output)
        # One name and one revision, the checkpoint's: rows, result files, hashes and the manifest all use them
        # (the name the user typed may be an alias; the revision may be the one the registry pins).
        self.name, self.revision = checkpoint.name, checkpoint.revision
        self.handle: ModelHandle | None = None
        self.variant_handles: dict[str, ModelHandle] = {}
        self.stats = CaptureStats()
        # Worker processes for the layers: under Ray a worker holds cpus_per_job CPUs, not the node's.
        self.jobs = config.jobs or (max(1, int(config.cpus_per_job)) if config.executor == "ray" else default_jobs())
        self.manifest = self.store.read_manifest(self.name, self.revision, run_id) or Manifest(run_id=run_id)
        self.manifests: list[Path | str] = []

    def _stored(self, task: str) -> StoredLookup:
        def lookup(suffix: str, part: Part) -> tuple[str | None, str]:
            return (self.store.stored_hash(self.name, self.revision, task, part, suffix), str(self.store.task_path(self.name, self.revision, task, part, suffix)))

        return lookup

    def run_task(self, spec: TaskSpec, position: str) -> str:
        """Plan, execute and record ``spec``'s parts not stored yet; ``done`` or ``skipped``."""
        prefix = f"[{self.label} · {position}] {self.name} · {spec.name}"
        family = get_family(spec.family)
        plan = plan_task(spec, self.config, self.checkpoint, self.plan, self._stored(spec.name))
        if plan.missing:
            _log(f"{prefix}: no {' or '.join(plan.missing)} protocol for the {spec.family} family" + ("; skipped" if not plan.variants else ""))
        work = plan.work
        if not work:
            if plan.hashes and self._recorded_in_this_run(spec.name, plan.hashes):
                # Finished by an earlier attempt of this run (a Ray worker that died before its reply reached the driver).
                _log(f"{prefix}: done earlier in this run")
                return "done"
            if plan.variants:
                _log(f"{prefix}: " + ("already done, skipped (--overwrite to redo)" if family.reads != "nothing" or self.plan.metrics
                                      else "label-free task and no metrics chosen, skipped"))
            return "skipped"
        self._load_model(prefix)
        assert self.handle is not None
        if family.causal_lm_only and not self.handle.is_causal:
            # Patching and the logit lens need a causal language model: an encoder skips them, with a reason.
            if any(Part.SCORES in item.parts for item in work):
                _log(f"{prefix}: {spec.family} skipped: it needs a causal language model with an unembedding; {self.name} is not one")
            work = [WorkItem(item.variant, tuple(p for p in item.parts if p != Part.SCORES)) for item in work]
            work = [item for item in work if item.parts]
            if not work:
                return "skipped"
        if family.robustness and any(Part.SCORES in item.parts for item in work):
            self._load_precision_variants(prefix)
        rows, record = self.execute(spec, work, prefix)
        self.record(spec, plan, work, rows, record)
        return "done"

    def _load_model(self, prefix: str) -> None:
        if self.handle is None:
            began = time.perf_counter()
            _log(f"{prefix}: loading model")
            config = self.config
            self.handle = load_checkpoint(self.checkpoint, device=config.device, dtype=config.dtype, device_map=config.device_map)
            self.manifest.timings_seconds["load_model"] = self.manifest.timings_seconds.get("load_model", 0.0) + time.perf_counter() - began

    def _load_precision_variants(self, prefix: str) -> None:
        """The model again in each precision the robustness variants ask for (``bfloat16``, ``int8``), once per run."""
        config = self.config
        for variant in set(config.robustness) & {"bfloat16", "int8"} - set(self.variant_handles):
            _log(f"{prefix}: loading model again in {variant} (robustness variant)")
            self.variant_handles[variant] = load_checkpoint(
                self.checkpoint, device=config.device, device_map=config.device_map,
                dtype="bfloat16" if variant == "bfloat16" else "float16", quantization="int8" if variant == "int8" else None,
            )

    def _recorded_in_this_run(self, task: str, hashes: dict[tuple[str, Part], str]) -> bool:
        """Whether this run already wrote every (variant, part) of ``task`` with these config hashes.

        Its manifest says so, or else the rows do: they carry the run id, and a
        result file is written whole before the manifest is, so a worker
        killed between the two still counts its task as done by this run.
        """
        record = self.manifest.tasks.get(task)
        recorded = record.variants if record is not None else {}
        if all(recorded.get(suffix or "default") is not None and recorded[suffix or "default"].config_hashes.get(part.value) == h
               for (suffix, part), h in hashes.items()):
            return True
        return all(self.store.stored_run_ids(self.name, self.revision, task, part, suffix) == {self.run_id} for suffix, part in hashes)

    def execute(self, spec: TaskSpec, work: list[WorkItem], prefix: str) -> tuple[dict[tuple[str, Part], pd.DataFrame], TaskRecord]:
        """Data -> captures -> evaluators and metrics -> tidy rows per (variant suffix, part), and the task's manifest record.

        One capture per pooling serves every variant and part of ``work`` (:class:`~layerbench.task_capture.TaskCapture`);
        each variant's scores come from the executor of what its family reads (:data:`~layerbench.scoring.EXECUTORS`),
        its label-free metrics from the metric stage.
        """
        handle, config = self.handle, self.config
        assert handle is not None  # run_task loads the model first
        began = time.perf_counter()
        family = get_family(spec.family)
        data = family.texts_for_model(load_task_data(spec, config.limit, config.seed), handle.checkpoint.prompts)
        seconds = {"data": time.perf_counter() - began}
        passes_before = self.stats.forward_passes
        task = plan_capture(data, config, self.plan, family, work, handle.default_pooling, spec.max_length)
        _log(f"{prefix}: {task.describe(len(data), handle.n_layers, config.layers)}")
        seconds |= task.run(handle, self.variant_handles, config, self.stats)
        rows: dict[tuple[str, Part], pd.DataFrame] = {}
        record = TaskRecord(family=spec.family, main_score=spec.main_score, version=spec.version, n=len(data), data=data.provenance)
        for item in work:
            v = item.variant
            identity = dict(model=self.name, revision=self.revision, task=spec.name, subset=spec.subset, split=spec.split,
                            n_layers=handle.n_layers, run_id=self.run_id, protocol=v.protocol, site=v.site)
            entry = VariantRecord(protocol=v.protocol, site=v.site, pooling=task.pooling_of[v.suffix])
            if Part.SCORES in item.parts:
                rows |= self.score(family, v, data, task, identity, entry, seconds, prefix)
            if Part.METRICS in item.parts:
                rows |= self.metrics(v, task, identity, entry, seconds, prefix)
            entry.rows = {part.value: len(rows[(v.suffix, part)]) for part in Part if (v.suffix, part) in rows}
            record.variants[v.suffix or "default"] = entry
        seconds["metrics"] = seconds.get("metrics", 0.0) + task.kernel_seconds  # the kernels ran inside the capture's passes
        record.forward_passes, record.seconds = self.stats.forward_passes - passes_before, seconds
        return rows, record

    def score(self, family: Family, v: Variant, data: TextDataset, task: TaskCapture, identity: dict[str, Any], entry: VariantRecord,
              seconds: dict[str, float], prefix: str) -> dict[tuple[str, Part], pd.DataFrame]:
        """One variant's scores (and item records) from its protocol's evaluator, run by the executor of what the family reads."""
        handle = self.handle
        assert handle is not None
        evaluator = family.load_evaluator(v.protocol)  # the protocol's own function, else the family's evaluator
        if evaluator is None:  # plan_task asks for scores only where the family has an evaluator
            raise ValueError(f"task '{v.spec.name}' has no evaluator for its scores")
        began = time.perf_counter()
        reads_states = family.reads == "states"
        _log(f"{prefix}: {family.name} evaluator, {v.label}, on {len(task.site(v).layers) if reads_states else handle.n_layers + 1} layers"
             + (f" in {self.jobs} worker processes" if reads_states and self.jobs > 1 else ""))
        scored = EXECUTORS[family.reads](evaluator, EvaluatorInputs(data, v, self.config.seed, handle, task, self.jobs, self.stats))
        entry.evaluator_notes = scored.notes or None
        rows = {(v.suffix, Part.SCORES): complete_rows(scored.rows, **identity)}
        if scored.items is not None:  # an evaluator that keeps item records (the gate pairs on them)
            rows[(v.suffix, Part.ITEMS)] = complete_items(scored.items, **{k: identity[k] for k in _ITEM_IDENTITY})
        if scored.sketches is not None:  # per-layer summaries that later models and checkpoints are compared with
            rows[(v.suffix, Part.SKETCHES)] = complete_sketches(scored.sketches, **{k: identity[k] for k in _SKETCH_IDENTITY})
        seconds["evaluate"] = seconds.get("evaluate", 0.0) + time.perf_counter() - began
        if task.robustness:
            entry.robustness = task.robustness
        return rows

    def metrics(self, v: Variant, task: TaskCapture, identity: dict[str, Any], entry: VariantRecord, seconds: dict[str, float],
                prefix: str) -> dict[tuple[str, Part], pd.DataFrame]:
        """One variant's label-free metrics on its site's pooled states, views and per-prompt kernel values."""
        handle, plan, texts = self.handle, self.plan, task.texts
        assert handle is not None
        began = time.perf_counter()
        _log(f"{prefix}: {len(plan.metrics)} label-free metrics, {v.site} site")
        # A model on a GPU: the metrics compute there too, in torch. --metrics-device chooses (cpu: torch on the host); a CPU model: numpy.
        device = self.config.metrics_device or (handle.device.type if handle.device.type != "cpu" else None)
        site = task.site(v)
        metric_rows, notes = evaluate_metrics(plan, texts.clean(site.pooled), site.per_prompt, texts.view_states(site.pooled), layers=site.layers, device=device)
        seconds["metrics"] = seconds.get("metrics", 0.0) + time.perf_counter() - began
        entry.metrics = {"names": plan.names, "sampled_texts": len(texts.sample), "views_per_text": texts.n_views, "notes": notes}
        for name, note in notes.items():
            _log(f"{prefix}: {name}: {note}")
        return {(v.suffix, Part.METRICS): complete_rows(metric_rows, **identity)}

    def record(self, spec: TaskSpec, plan: TaskPlan, work: list[WorkItem], rows: dict[tuple[str, Part], pd.DataFrame], record: TaskRecord) -> None:
        """Write a task's rows (item records and sketches first, with their scores' hash), then the manifest with the task's record merged in.

        Stored scores always have the items (sketches) they were computed from, or none when the evaluator keeps none: then an older
        run's are removed, not left beside scores they do not belong to. The manifest is rewritten after every task,
        so an interrupted run still documents what it finished.
        """
        for (suffix, part), frame in sorted(rows.items(), key=lambda entry: entry[0][1] not in COMPANIONS):
            self.store.write_task(frame, self.name, self.revision, spec.name, plan.hashes[(suffix, Part.SCORES if part in COMPANIONS else part)], part, suffix)
            for companion in COMPANIONS if part == Part.SCORES else ():
                if (suffix, companion) not in rows:
                    self.store.remove_task(self.name, self.revision, spec.name, companion, suffix)
        for item in work:
            record.variants[item.variant.suffix or "default"].config_hashes = {part.value: plan.hashes[(item.variant.suffix, part)] for part in item.parts}
        previous = self.manifest.tasks.get(spec.name)
        record.variants = {**(previous.variants if previous is not None else {}), **record.variants}
        self.manifest.tasks[spec.name] = record
        for stage, seconds in record.seconds.items():
            self.manifest.timings_seconds[stage] = self.manifest.timings_seconds.get(stage, 0.0) + seconds
        self._write_manifest("running")

    def finish(self, status: str = "complete", error: str | None = None, task: str | None = None) -> None:
        """Mark this model's manifest ``complete`` (or ``interrupted``, or ``failed`` with the ``error`` line and the ``task`` it came
        from); nothing to do if no task ran (the model was never loaded)."""
        if self.handle is not None:
            self.manifest = self.manifest.model_copy(update={"error": error, "error_task": task})
            self._write_manifest(status)

    def _write_manifest(self, status: str) -> None:
        if self.handle is None:  # written only after a task ran, so the model is loaded
            raise ValueError("no manifest before the model is loaded")
        stats = self.stats
        self.manifest = self.manifest.model_copy(update={
            "status": status,
            "process": Process(host=socket.gethostname(), pid=os.getpid()),
            "written_at": datetime.now(timezone.utc).isoformat(),
            "config": self.config.model_dump(mode="json"),
            "config_hash": hash_value(self.config.model_dump(mode="json")),
            "model": ModelRecord.model_validate(self.handle.provenance()),
            "environment": Environment.model_validate(self.env),
            "capture": {k: v for k, v in asdict(stats).items() if k != "batch_sizes"} | {"batches": len(stats.batch_sizes)},
            "forward_passes": stats.forward_passes,
        })
        path = self.store.write_manifest(self.manifest)
        if path not in self.manifests:
            self.manifests.append(path)
