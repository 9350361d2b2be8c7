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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerbench.capture import CaptureStats, capture_layers, counting_passes
from layerbench.choices import DEFAULT_SITE
from layerbench.data import load_task_data
from layerbench.data.augment import make_views, noise_prefix
from layerbench.data.dataset import TextDataset, sample_indices
from layerbench.errors import UserError
from layerbench.families import get_family
from layerbench.fingerprint import hash_value
from layerbench.metrics.suite import METRICS_VERSION, MetricPlan, evaluate_metrics
from layerbench.models import ModelHandle
from layerbench.models.loading import load_checkpoint
from layerbench.models.resolve import Checkpoint
from layerbench.parallel import default_jobs
from layerbench.results import ResultStore, complete_rows
from layerbench.results.items import Scored, complete_items
from layerbench.run_config import RunConfig
from layerbench.specs import TaskSpec
from layerbench.specs.protocols import resolve_protocol, variant_suffix

__all__ = ["ModelRunner", "RunSummary", "TaskTexts", "Variant", "seed_everything", "task_config_hash", "task_texts", "task_variants"]


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


@dataclass(frozen=True)
class Variant:
    """One way a task runs: under a protocol (the spec with the protocol's settings), at a capture site, with a pooling.

    Attributes:
        protocol: the protocol's name (the rows' ``protocol``).
        spec: the task spec with the protocol's settings applied.
        site: the capture site (the rows' ``site``).
        pooling: ``mean``, ``last``, ``cls``, or ``model`` for the model's default.
    """

    protocol: str
    spec: TaskSpec
    site: str
    pooling: str

    @property
    def suffix(self) -> str:
        """The result files' suffix (:func:`layerbench.specs.protocols.variant_suffix`): empty for ours on the residual stream, else ``@<protocol>``, ``@normed``..."""
        return variant_suffix(self.protocol, self.site)

    @property
    def label(self) -> str:
        return f"{self.protocol} on {self.site}"

    def capture_pooling(self, model_default: str) -> str:
        """The pooling the capture uses: the variant's, or ``model_default`` (the checkpoint's registry default) for ``model``."""
        return model_default if self.pooling == "model" else self.pooling


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


@dataclass(frozen=True)
class TaskTexts:
    """Every text one task's capture runs, as one list, and where each part of it lies.

    The capture sees ``all``: the task's texts (N), their noisy copies (N
    more, for the ``noise`` robustness variant), then V augmented views of
    each of the S texts sampled for the metrics (S x V). The accessors cut a
    site's pooled states ``[K, len(all), D]`` back into those parts.
    """

    data: TextDataset
    noise: list[str]
    sample: list[int]
    n_views: int
    views: list[str]

    @property
    def all(self) -> list[str]:
        return self.data.texts + self.noise + self.views

    def clean(self, pooled: np.ndarray) -> np.ndarray:
        """``[K, N, D]``: the task's own texts."""
        return pooled[:, : len(self.data)]

    def noisy(self, pooled: np.ndarray) -> np.ndarray | None:
        """``[K, N, D]``: the noisy copies, or None when the noise variant is not asked for."""
        n = len(self.data)
        return pooled[:, n : 2 * n] if self.noise else None

    def view_states(self, pooled: np.ndarray) -> np.ndarray | None:
        """``[K, S, V, D]``: the views of the metric sample, or None when no view metric is planned."""
        if not self.n_views:
            return None
        return pooled[:, len(self.data) + len(self.noise) :].reshape(pooled.shape[0], len(self.sample), self.n_views, -1)


def task_texts(data: TextDataset, config: RunConfig, plan: MetricPlan, noise: bool, metrics: bool) -> TaskTexts:
    """The texts of one task's capture: its texts, their noisy copies if ``noise``, the views of the metric sample if ``metrics`` needs them."""
    noisy = [noise_prefix(text, config.seed) + text for text in data.texts] if noise else []
    sample = sample_indices(len(data), config.metric_samples, config.seed).tolist() if metrics and plan.needs_sample else []
    n_views = plan.n_views if sample else 0
    views = [v for per_text in make_views([data.texts[i] for i in sample], n_views, config.seed) for v in per_text] if n_views else []
    return TaskTexts(data, noisy, sample, n_views, views)


def _manifest(run_id: str, status: str, config: RunConfig, handle: ModelHandle, env: dict[str, Any], tasks: dict[str, Any], timings: dict[str, float], stats: CaptureStats) -> dict[str, Any]:
    """The JSON record of one model's part of a run."""
    return {
        "run_id": run_id,
        "status": status,
        # Who writes it: a later run marks a manifest left "running" by a process that is gone as "interrupted".
        "process": {"host": socket.gethostname(), "pid": os.getpid()},
        "written_at": datetime.now(timezone.utc).isoformat(),
        "config": config.model_dump(mode="json"),
        "config_hash": hash_value(config.model_dump(mode="json")),
        "model": handle.provenance(),
        "environment": env,
        "tasks": tasks,
        "timings_seconds": timings,
        "capture": {k: v for k, v in asdict(stats).items() if k != "batch_sizes"} | {"batches": len(stats.batch_sizes)},
        "forward_passes": stats.forward_passes,
    }


# The identity an item record shares with its score rows.
_ITEM_IDENTITY = ("model", "revision", "task", "subset", "split", "run_id", "protocol", "site")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ModelRunner:
    """One model's part of a run: loads the model when a task first needs it, runs tasks one at a time, keeps the manifest.

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
        previous = self.store.read_manifest(self.name, self.revision, run_id) or {}
        self.timings: dict[str, float] = dict(previous.get("timings_seconds", {}))
        self.task_records: dict[str, Any] = dict(previous.get("tasks", {}))
        self.manifests: list[Path | str] = []

    def run_task(self, spec: TaskSpec, position: str) -> str:
        """Run the parts of ``spec``'s variants not stored yet; ``done`` or ``skipped``."""
        config, store, revision = self.config, self.store, self.revision
        prefix = f"[{self.label} · {position}] {self.name} · {spec.name}"
        family = get_family(spec.family)
        has_scores = family.reads != "nothing"
        variants, missing = task_variants(spec, config)
        if missing:
            _log(f"{prefix}: no {' or '.join(missing)} protocol for the {spec.family} family" + ("; skipped" if not variants else ""))
        # The label-free metrics run once per (site, pooling): the first variant with that pair owns them.
        owners: dict[tuple[str, str], str] = {}
        for v in variants:
            owners.setdefault((v.site, v.capture_pooling(self.checkpoint.pooling)), v.suffix)
        work: list[tuple[Variant, list[str]]] = []
        hashes: dict[tuple[str, str], str] = {}
        for v in variants:
            owns_metrics = owners[(v.site, v.capture_pooling(self.checkpoint.pooling))] == v.suffix
            wanted = [part for part, on in (("scores", has_scores), ("metrics", bool(self.plan.metrics) and owns_metrics)) if on]
            for part in wanted:
                hashes[(v.suffix, part)] = task_config_hash(v, config, self.checkpoint, part)
            parts = [part for part in wanted if _needs_run(store, self.name, revision, spec.name, part, hashes[(v.suffix, part)], config.overwrite, v.suffix, config.update)]
            if parts:
                work.append((v, parts))
        if not work:
            if hashes and self._recorded_in_this_run(spec.name, hashes):
                # Finished by an earlier attempt of this run (a Ray worker that died before its reply reached the driver).
                _log(f"{prefix}: done earlier in this run")
                return "done"
            if variants:
                _log(f"{prefix}: " + ("already done, skipped (--overwrite to redo)" if has_scores or self.plan.metrics else "label-free task and no metrics chosen, skipped"))
            return "skipped"
        if self.handle is None:
            began = time.perf_counter()
            _log(f"{prefix}: loading model")
            self.handle = load_checkpoint(self.checkpoint, device=config.device, dtype=config.dtype, device_map=config.device_map)
            self.timings["load_model"] = self.timings.get("load_model", 0.0) + time.perf_counter() - began
        if family.causal_lm_only and not self.handle.is_causal:
            # Patching and the logit lens need a causal language model: an encoder skips them, with a reason.
            if any("scores" in parts for _, parts in work):
                _log(f"{prefix}: {spec.family} skipped: it needs a causal language model with an unembedding; {self.name} is not one")
            work = [(v, [p for p in parts if p != "scores"]) for v, parts in work]
            work = [(v, parts) for v, parts in work if parts]
            if not work:
                return "skipped"
        if family.robustness and any("scores" in parts for _, parts in work):
            for variant in set(config.robustness) & {"bfloat16", "int8"} - set(self.variant_handles):
                _log(f"{prefix}: loading model again in {variant} (robustness variant)")
                self.variant_handles[variant] = load_checkpoint(
                    self.checkpoint, device=config.device, device_map=config.device_map,
                    dtype="bfloat16" if variant == "bfloat16" else "float16", quantization="int8" if variant == "int8" else None,
                )
        rows, record = self._run_parts(spec, work, prefix)
        # Item records first, with their scores' hash: stored scores always have the items they were computed from (or none, when
        # the evaluator keeps none: then an older run's items are removed, not left beside scores they do not belong to).
        for (suffix, part), frame in sorted(rows.items(), key=lambda entry: entry[0][1] != "items"):
            store.write_task(frame, self.name, revision, spec.name, hashes[(suffix, "scores" if part == "items" else part)], part, suffix)
            if part == "scores" and (suffix, "items") not in rows:
                store.remove_task(self.name, revision, spec.name, "items", suffix)
        previous = self.task_records.get(spec.name, {}).get("variants", {})
        for v, parts in work:
            record["variants"][v.suffix or "default"]["config_hashes"] = {part: hashes[(v.suffix, part)] for part in parts}
        self.task_records[spec.name] = {**record, "variants": {**previous, **record["variants"]}}
        for stage, seconds in record["seconds"].items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        # Rewritten after every task, so an interrupted run still documents what it finished.
        self._write_manifest("running")
        return "done"

    def _recorded_in_this_run(self, task: str, hashes: dict[tuple[str, str], str]) -> bool:
        """Whether this run already wrote every (variant, part) of ``task`` with these config hashes.

        Its manifest says so, or else the rows do: they carry the run id, and a
        result file is written whole before the manifest is, so a worker
        killed between the two still counts its task as done by this run.
        """
        recorded = self.task_records.get(task, {}).get("variants", {})
        if all(recorded.get(suffix or "default", {}).get("config_hashes", {}).get(part) == h for (suffix, part), h in hashes.items()):
            return True
        return all(self.store.stored_run_ids(self.name, self.revision, task, part, suffix) == {self.run_id} for suffix, part in hashes)

    def _run_parts(self, spec: TaskSpec, work: list[tuple[Variant, list[str]]], prefix: str) -> tuple[dict[tuple[str, str], pd.DataFrame], dict[str, Any]]:
        """Data -> captures -> evaluators and metrics -> tidy rows per (variant suffix, part), and the task's manifest record.

        ``work`` pairs each variant to run with its parts (``scores``,
        ``metrics``). One capture per pooling serves every variant and part:
        all their sites, the task's texts, their noisy copies, the augmented
        views of the metric sample, and the per-prompt kernels on that
        sample's token states go through the same batched forward passes
        (:class:`TaskTexts`). A precision variant is one more capture of the
        task's texts with the model loaded in that precision.
        """
        handle, config, plan, stats = self.handle, self.config, self.plan, self.stats
        assert handle is not None  # run_task loads the model first
        began = time.perf_counter()
        family = get_family(spec.family)
        data = family.texts_for_model(load_task_data(spec, config.limit, config.seed), handle.checkpoint.prompts)
        seconds = {"data": time.perf_counter() - began}
        reads_states = family.reads == "states"
        pooling_of = {v.suffix: v.capture_pooling(handle.default_pooling) for v, _ in work}
        with_scores = any("scores" in parts for _, parts in work)
        robustness = [r for r in config.robustness if family.robustness] if with_scores and reads_states else []
        texts = task_texts(data, config, plan, "noise" in robustness, any("metrics" in parts for _, parts in work))
        sites_of: dict[str, list[str]] = {}  # pooling -> the sites captured with it (a model-reading family captures only for its metrics)
        for v, parts in work:
            if "metrics" in parts or reads_states:
                sites_of.setdefault(pooling_of[v.suffix], [])
                if v.site not in sites_of[pooling_of[v.suffix]]:
                    sites_of[pooling_of[v.suffix]].append(v.site)
        _log(
            f"{prefix}: {len(data)} texts, " + (f"{len(config.layers)} of {handle.n_layers + 1} layers" if config.layers else f"{handle.n_layers + 1} layers") + "; "
            + "; ".join(f"{v.label} ({pooling_of[v.suffix]} pooling)" for v, _ in work)
            + (f"; robustness variants {', '.join(robustness)}" if robustness else "")
            + (f"; metrics on {len(texts.sample)} sampled texts, {texts.n_views} augmented views each" if texts.sample else "")
        )
        began = time.perf_counter()
        passes_before, kernel_seconds = stats.forward_passes, stats.per_prompt_seconds
        max_length = config.max_length or spec.max_length
        captures = {
            pooling: capture_layers(handle, texts.all, pooling, config.batch_size, max_length, cache=config.cache, stats=stats,
                                    per_prompt=plan.kernels if texts.sample else None, per_prompt_texts=texts.sample, sites=sites, layers=config.layers or None)
            for pooling, sites in sites_of.items()
        }
        precision = {
            (r, pooling): capture_layers(self.variant_handles[r], data.texts, pooling, config.batch_size, max_length, cache=config.cache, stats=stats, sites=sites,
                                         layers=config.layers or None)
            for r in robustness if r in self.variant_handles for pooling, sites in sites_of.items()
        }
        t_kernels = stats.per_prompt_seconds - kernel_seconds  # token metrics, computed inside the capture
        seconds["capture"] = time.perf_counter() - began - t_kernels
        rows: dict[tuple[str, str], pd.DataFrame] = {}
        record: dict[str, Any] = {"family": spec.family, "main_score": spec.main_score, "version": spec.version, "n": len(data), "data": data.provenance,
                                  "variants": {}}
        # A model on a GPU: the metrics compute there too, in torch. --metrics-device chooses (cpu: torch on the host); a CPU model: numpy.
        metrics_device = config.metrics_device or (handle.device.type if handle.device.type != "cpu" else None)
        for v, parts in work:
            pooling = pooling_of[v.suffix]
            identity: dict[str, Any] = dict(model=self.name, revision=self.revision, task=spec.name, subset=spec.subset, split=spec.split,
                                            n_layers=handle.n_layers, run_id=self.run_id, protocol=v.protocol, site=v.site)
            entry: dict[str, Any] = {"protocol": v.protocol, "site": v.site, "pooling": pooling}
            if "scores" in parts:
                evaluator = family.load_evaluator(v.protocol)  # the protocol's own function, else the family's evaluator
                if evaluator is None:  # run_task asks for scores only where the family has an evaluator
                    raise ValueError(f"task '{spec.name}' has no evaluator for its scores")
                began = time.perf_counter()
                _log(f"{prefix}: {spec.family} evaluator, {v.label}, on {len(captures[pooling].sites[v.site].layers) if reads_states else handle.n_layers + 1} layers"
                     + (f" in {self.jobs} worker processes" if reads_states and self.jobs > 1 else ""))
                if reads_states:
                    site = captures[pooling].sites[v.site]
                    states = {"clean": texts.clean(site.pooled)}
                    noisy = texts.noisy(site.pooled)
                    if noisy is not None:
                        states["noise"] = noisy
                    states |= {r: precision[(r, pooling)].sites[v.site].pooled for r in robustness if (r, pooling) in precision}
                    scores = evaluator(states, data, v.spec, config.seed, layers=site.layers,
                                       **_accepted(evaluator, n_layers=handle.n_layers, jobs=self.jobs))
                else:
                    with counting_passes(handle, stats):
                        scores = evaluator(handle, data, v.spec, config.seed)
                if isinstance(scores, Scored):  # an evaluator that keeps item records (the gate pairs on them)
                    if scores.items is not None:
                        rows[(v.suffix, "items")] = complete_items(scores.items, **{k: identity[k] for k in _ITEM_IDENTITY})
                    scores = scores.rows
                rows[(v.suffix, "scores")] = complete_rows(scores, **identity)
                seconds["evaluate"] = seconds.get("evaluate", 0.0) + time.perf_counter() - began
                if robustness:
                    entry["robustness"] = robustness
            if "metrics" in parts:
                began = time.perf_counter()
                _log(f"{prefix}: {len(plan.metrics)} label-free metrics, {v.site} site")
                site = captures[pooling].sites[v.site]
                metric_rows, notes = evaluate_metrics(plan, texts.clean(site.pooled), site.per_prompt, texts.view_states(site.pooled), layers=site.layers,
                                                      device=metrics_device)
                rows[(v.suffix, "metrics")] = complete_rows(metric_rows, **identity)
                seconds["metrics"] = seconds.get("metrics", 0.0) + time.perf_counter() - began
                entry["metrics"] = {"names": plan.names, "sampled_texts": len(texts.sample), "views_per_text": texts.n_views, "notes": notes}
                for name, note in notes.items():
                    _log(f"{prefix}: {name}: {note}")
            entry["rows"] = {part: len(rows[(v.suffix, part)]) for part in ("scores", "items", "metrics") if (v.suffix, part) in rows}
            record["variants"][v.suffix or "default"] = entry
        seconds["metrics"] = seconds.get("metrics", 0.0) + (t_kernels if texts.sample else 0.0)
        record |= {"forward_passes": stats.forward_passes - passes_before, "seconds": seconds}
        return rows, record

    def finish(self, status: str = "complete") -> None:
        """Mark this model's manifest ``complete`` (or ``interrupted``, ``failed``); nothing to do if no task ran."""
        if self.handle is not None:
            self._write_manifest(status)

    def _write_manifest(self, status: str) -> None:
        if self.handle is None:  # written only after a task ran, so the model is loaded
            raise ValueError("no manifest before the model is loaded")
        path = self.store.write_manifest(self.name, self.revision, self.run_id,
                                         _manifest(self.run_id, status, self.config, self.handle, self.env, self.task_records, self.timings, self.stats))
        if path not in self.manifests:
            self.manifests.append(path)


def _accepted(function: Any, **options: Any) -> dict[str, Any]:
    """The ``options`` that ``function`` takes: a family's evaluator written before ``n_layers`` and ``jobs`` existed still runs."""
    import inspect

    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return options
    return {name: value for name, value in options.items() if name in parameters}


def _needs_run(store: ResultStore, model: str, revision: str | None, task: str, part: str, config_hash: str, overwrite: bool, variant: str = "",
               update: bool = False) -> bool:
    """Whether a task part must run: not stored yet, or stored and ``overwrite``, or stored from another config and ``update``;
    stored from another config without either is an error."""
    stored = store.stored_hash(model, revision, task, part, variant)
    if stored is None or overwrite:
        return True
    if stored != config_hash:
        if update:
            return True
        raise UserError(
            f"{store.task_path(model, revision, task, part, variant)} holds {part} of '{task}{variant}' from another config; "
            "pass --update to replace what changed, --overwrite to redo everything, or choose another --output"
        )
    return False
