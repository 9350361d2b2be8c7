"""The runner: what the CLI and Python users call.

Data flows one way: spec -> data -> capture -> evaluator and metrics -> rows -> store.
Each (model, task) has up to two parts, stored and resumed separately: the
evaluator's scores and the label-free metric suite's rows.
"""
from __future__ import annotations

import random
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerbench.capture import DEFAULT_SITE, SITES, CaptureStats, capture_layers
from layerbench.data import load_task_data
from layerbench.data.augment import make_views, noise_prefix
from layerbench.data.dataset import sample_indices
from layerbench.errors import UserError
from layerbench.evaluators import get_evaluator
from layerbench.evaluators.label_free import METRICS_VERSION, MetricPlan, evaluate_metrics
from layerbench.fingerprint import hash_value
from layerbench.manifest import environment
from layerbench.models import ModelHandle
from layerbench.models.resolve import resolve_checkpoint
from layerbench.models.loading import DTYPES, load_checkpoint, quantization_kwargs, resolve_device
from layerbench.results import ResultStore, complete_rows, load_results
from layerbench.specs import SuiteSpec, TaskSpec, get_suite, get_task
from layerbench.specs.protocols import check_protocol_names, resolve_protocol, variant_suffix
from layerbench.specs.schema import INTERVENTION_FAMILIES
from layerbench.storage import as_location

__all__ = ["ROBUSTNESS", "RunConfig", "RunSummary", "load_results", "resolve_tasks", "run"]

# Robustness variants of probe tasks (Jin et al. 2024), each adding rows with subset "<subset>+<variant>":
# noise: a seeded random-letter prefix on every text; bfloat16 / int8: the model loaded in that precision.
ROBUSTNESS = ("noise", "bfloat16", "int8")


@dataclass(frozen=True)
class RunConfig:
    """Everything a user chooses for a run; its hash is in the manifest."""

    models: tuple[str, ...]
    tasks: tuple[str, ...]
    output: str = "results"
    revision: str | None = None
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    batch_size: int | str = "auto"
    max_length: int | None = None
    overwrite: bool = False
    cache: bool = True
    metrics: tuple[str, ...] = ()
    metric_samples: int = 512
    pooling: str | None = None
    robustness: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()


@dataclass
class RunSummary:
    """What a run did: per (model, task) one of ``done`` / ``skipped``, and where things went."""

    output: Path | str  # a folder, or an fsspec URL
    run_id: str
    status: dict[str, dict[str, str]] = field(default_factory=dict)
    forward_passes: int = 0
    manifests: list[Path | str] = field(default_factory=list)


def resolve_tasks(tasks: list[str] | None, suite: str | None) -> tuple[list[TaskSpec], SuiteSpec | None]:
    """Task specs named directly or by a suite (None: the ``default`` suite), and that suite.

    A name ``mteb:NAME`` is any mteb task by its mteb name, run per layer
    with mean pooling (mteb's built-in tasks need the network); a suite's
    ``languages`` keep only those subsets of its ``mteb:`` tasks.
    """
    if tasks and suite:
        raise UserError("give --tasks or --suite, not both")
    if tasks:
        return [task_spec(name) for name in tasks], None
    chosen = get_suite(suite or "default")
    return [task_spec(name, chosen.languages) for name in chosen.tasks], chosen


def task_spec(name: str, languages: list[str] | None = None) -> TaskSpec:
    """The spec of a registered task, or an ad-hoc one for ``mteb:NAME`` (with ``languages``, its subsets in those languages)."""
    return mteb_task_spec(name[5:], languages) if name.startswith("mteb:") else get_task(name)


def mteb_task_spec(name: str, languages: list[str] | None = None) -> TaskSpec:
    """An ad-hoc spec for the mteb task ``name`` (``--tasks mteb:NAME``): per-layer mteb, mean pooling, mteb's main score."""
    if not name:
        raise UserError("give an mteb task name after 'mteb:', e.g. --tasks mteb:STS12")
    slug = "mteb-" + "".join(c if c.isalnum() or c in "._-" else "-" for c in name.lower())
    return TaskSpec(name=slug, family="mteb", description=f"mteb task {name}, every layer", data={"source": "mteb", "task": name, "languages": languages},
                    pooling="mean", main_score="main_score")


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
        """The result files' suffix (:func:`layerbench.specs.protocols.variant_suffix`): empty for ours on the residual stream, else ``@jin2024``, ``@normed``..."""
        return variant_suffix(self.protocol, self.site)

    @property
    def label(self) -> str:
        return f"{self.protocol} on {self.site}"


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


def task_config_hash(variant: Variant, config: RunConfig, model: str, limit: int | None, part: str = "scores") -> str:
    """Identity of one (model, task variant) part's rows: what would change its numbers.

    The ``metrics`` part also depends on the chosen metrics, the prompt sample
    size and the metric code's version; the ``scores`` part on none of them.
    """
    identity: dict[str, Any] = {
        "task": variant.spec.model_dump(),
        "model": model,
        "revision": config.revision,
        "limit": limit,
        "seed": config.seed,
        "dtype": config.dtype,
        "max_length": config.max_length,
        "pooling": variant.pooling,
        "protocol": variant.protocol,
        "site": variant.site,
    }
    if part == "scores" and variant.spec.family == "probe" and config.robustness:
        identity["robustness"] = list(config.robustness)
    if part == "metrics":
        identity |= {"part": part, "metrics": list(config.metrics), "metric_samples": config.metric_samples, "metrics_version": METRICS_VERSION}
    return hash_value(identity)


def _run_task(
    handle: ModelHandle,
    spec: TaskSpec,
    work: list[tuple[Variant, list[str]]],
    config: RunConfig,
    plan: MetricPlan,
    model_name: str,
    run_id: str,
    stats: CaptureStats,
    prefix: str,
    variant_handles: dict[str, ModelHandle],
) -> tuple[dict[tuple[str, str], pd.DataFrame], dict[str, Any]]:
    """Data -> captures -> evaluators and metrics -> tidy rows per (variant suffix, part), and the manifest record.

    ``work`` pairs each variant to run with its parts (``scores``,
    ``metrics``). One capture per pooling serves every variant and part: all
    their sites, the task's texts, their noisy copies (the ``noise``
    robustness variant), the augmented views of the metric sample, and the
    per-prompt kernels on that sample's token states go through the same
    batched forward passes. A precision variant is one more capture of the
    task's texts with the model loaded in that precision. The caller asks for
    the label-free metrics once per (site, pooling) (:meth:`ModelRunner.run_task`).
    """
    began = time.perf_counter()
    data = load_task_data(spec, config.limit, config.seed)
    t_data = time.perf_counter() - began
    intervention = spec.family in INTERVENTION_FAMILIES
    pooling_of = {v.suffix: handle.default_pooling if v.pooling == "model" else v.pooling for v, _ in work}
    with_metrics = any("metrics" in parts for _, parts in work)
    with_scores = [v for v, parts in work if "scores" in parts]
    variants = [r for r in config.robustness if spec.family == "probe"] if with_scores and not intervention else []
    noise_texts = [noise_prefix(text, config.seed) + text for text in data.texts] if "noise" in variants else []
    sample = sample_indices(len(data), config.metric_samples, config.seed).tolist() if with_metrics and plan.needs_sample else []
    n_views = plan.n_views if sample else 0
    view_texts = [v for views in make_views([data.texts[i] for i in sample], n_views, config.seed) for v in views] if n_views else []
    n = len(data)
    # pooling -> sites captured with it
    capture_sites: dict[str, list[str]] = {}
    for v, parts in work:
        if "metrics" in parts or not intervention:
            capture_sites.setdefault(pooling_of[v.suffix], [])
            if v.site not in capture_sites[pooling_of[v.suffix]]:
                capture_sites[pooling_of[v.suffix]].append(v.site)
    _log(
        f"{prefix}: {n} texts, {handle.n_layers + 1} layers; "
        + "; ".join(f"{v.label} ({pooling_of[v.suffix]} pooling)" for v, _ in work)
        + (f"; robustness variants {', '.join(variants)}" if variants else "")
        + (f"; metrics on {len(sample)} sampled texts, {n_views} augmented views each" if sample else "")
    )
    began = time.perf_counter()
    passes_before, kernel_seconds = stats.forward_passes, stats.per_prompt_seconds
    max_length = config.max_length or spec.max_length
    captures = {
        pooling: capture_layers(
            handle, data.texts + noise_texts + view_texts, pooling, config.batch_size, max_length, cache=config.cache, stats=stats,
            per_prompt=plan.kernels if sample else None, per_prompt_texts=sample, sites=sites,
        )
        for pooling, sites in capture_sites.items()
    }
    precision = {
        (r, pooling): capture_layers(variant_handles[r], data.texts, pooling, config.batch_size, max_length, cache=config.cache, stats=stats, sites=sites)
        for r in variants if r in variant_handles for pooling, sites in capture_sites.items()
    }
    t_kernels = stats.per_prompt_seconds - kernel_seconds  # token metrics, computed inside the capture
    t_capture = time.perf_counter() - began - t_kernels
    rows: dict[tuple[str, str], pd.DataFrame] = {}
    seconds = {"data": t_data, "capture": t_capture}
    record: dict[str, Any] = {"family": spec.family, "version": spec.version, "n": n, "data": data.provenance, "variants": {}}
    evaluator = get_evaluator(spec.family)
    for v, parts in work:
        pooling = pooling_of[v.suffix]
        complete = dict(model=model_name, revision=config.revision, task=spec.name, subset=spec.subset, split=spec.split,
                        n_layers=handle.n_layers, run_id=run_id, protocol=v.protocol, site=v.site)
        entry: dict[str, Any] = {"protocol": v.protocol, "site": v.site, "pooling": pooling}
        site = captures[pooling].sites[v.site] if pooling in captures else None
        if "scores" in parts:
            began = time.perf_counter()
            _log(f"{prefix}: {spec.family} evaluator, {v.label}, on {handle.n_layers + 1} layers")
            if intervention:
                scores = evaluator(handle, data, v.spec, config.seed)
            else:
                states = {"clean": site.pooled[:, :n]}
                if noise_texts:
                    states["noise"] = site.pooled[:, n : 2 * n]
                for r in variants:
                    if (r, pooling) in precision:
                        states[r] = precision[(r, pooling)].sites[v.site].pooled
                scores = evaluator(states, data, v.spec, config.seed, layers=site.layers)
            rows[(v.suffix, "scores")] = complete_rows(scores, **complete)
            seconds["evaluate"] = seconds.get("evaluate", 0.0) + time.perf_counter() - began
            if variants:
                entry["robustness"] = variants
        if "metrics" in parts:
            began = time.perf_counter()
            _log(f"{prefix}: {len(plan.metrics)} label-free metrics, {v.site} site")
            pooled = site.pooled[:, :n]
            views = site.pooled[:, n + len(noise_texts) :].reshape(pooled.shape[0], len(sample), n_views, -1) if n_views else None
            metric_rows, notes = evaluate_metrics(plan, pooled, site.per_prompt, views, layers=site.layers)
            rows[(v.suffix, "metrics")] = complete_rows(metric_rows, **complete)
            seconds["metrics"] = seconds.get("metrics", 0.0) + time.perf_counter() - began
            entry["metrics"] = {"names": plan.names, "sampled_texts": len(sample), "views_per_text": n_views, "notes": notes}
            for name, note in notes.items():
                _log(f"{prefix}: {name}: {note}")
        entry["rows"] = {part: len(rows[(v.suffix, part)]) for part in ("scores", "metrics") if (v.suffix, part) in rows}
        record["variants"][v.suffix or "default"] = entry
    seconds["metrics"] = seconds.get("metrics", 0.0) + (t_kernels if sample else 0.0)
    record |= {"forward_passes": stats.forward_passes - passes_before, "seconds": seconds}
    return rows, record


def _manifest(run_id: str, status: str, config: RunConfig, handle: ModelHandle, env: dict[str, Any], tasks: dict[str, Any], timings: dict[str, float], stats: CaptureStats) -> dict[str, Any]:
    """The JSON record of one model's part of a run."""
    return {
        "run_id": run_id,
        "status": status,
        "written_at": datetime.now(timezone.utc).isoformat(),
        "config": asdict(config),
        "config_hash": hash_value(asdict(config)),
        "model": handle.provenance(),
        "environment": env,
        "tasks": tasks,
        "timings_seconds": timings,
        "capture": {k: v for k, v in asdict(stats).items() if k != "batch_sizes"} | {"batches": len(stats.batch_sizes)},
        "forward_passes": stats.forward_passes,
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(
    models: list[str] | str,
    tasks: list[str] | None = None,
    suite: str | None = None,
    output: str | Path = "results",
    *,
    revision: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
    batch_size: int | str = "auto",
    max_length: int | None = None,
    overwrite: bool = False,
    cache: bool = True,
    metrics: list[str] | None = None,
    metric_samples: int | None = None,
    pooling: str | None = None,
    robustness: list[str] | None = None,
    protocols: list[str] | None = None,
    sites: list[str] | None = None,
    executor: str = "local",
    address: str | None = None,
    gpus_per_job: float = 1.0,
    cpus_per_job: float = 1.0,
) -> RunSummary:
    """Run tasks on models and write tidy rows and a manifest per model under ``output``.

    Every task gets its evaluator's scores (label-free tasks have none) and
    the label-free metric suite: ``metrics`` names the metrics (None: all
    registered, ``[]``: none); token and view metrics read a seeded sample of
    at most ``metric_samples`` texts per task (None: the suite's choice, else 512).

    ``pooling`` overrides every task's pooling (``mean``, ``last``, ``cls``).
    ``protocols`` runs every task under these protocols (:mod:`layerbench.specs.protocols`:
    ``layerbench``, ``paper`` for each family's paper protocol, or a paper's
    name such as ``jin2024``; None: the suite's, else each task's own); a task
    whose family has no such protocol is skipped. ``sites`` captures every
    task at these sites (``residual``, ``normed``, ``mlp-input``; None: each
    protocol's or task's own), all from the same forward passes.
    ``robustness`` names variants of probe tasks that add rows (see
    :data:`ROBUSTNESS`): ``noise`` captures every text again behind a seeded
    random-letter prefix; ``bfloat16`` and ``int8`` load the model again in
    that precision and capture the task's texts with it.

    ``executor="ray"`` spreads the (model, task) jobs over a Ray cluster
    (``address``: ``auto``, ``ray://...``, or None for a local one): one
    worker per model, loaded once and reused across its tasks, holding
    ``gpus_per_job`` GPUs (a fraction shares one) when the device is a GPU and
    ``cpus_per_job`` CPUs; a worker that dies is restarted and its job retried.
    ``output`` and the activation cache must be a path every worker can reach.
    The default ``local`` runs in this process and never imports Ray.

    A (model, task) part whose results already exist with the same config is
    skipped, so an interrupted run resumes where it stopped; existing results
    from another config are an error unless ``overwrite``. Every bad input is
    rejected before any model is loaded or file written.
    """
    models = [models] if isinstance(models, str) else list(models)
    if not models:
        raise UserError("no model given; pass --model (see `layerbench list models`)")
    resolve_device(device)  # an unknown or absent device fails here, before any work
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    if limit is not None and limit < 2:
        raise UserError(f"--limit must be at least 2 examples, got {limit}")
    if metric_samples is not None and metric_samples < 2:
        raise UserError(f"--metric-samples must be at least 2 texts, got {metric_samples}")
    if pooling is not None and pooling not in ("mean", "last", "cls"):
        raise UserError(f"unknown pooling '{pooling}'; use mean, last or cls")
    if executor not in ("local", "ray"):
        raise UserError(f"unknown executor '{executor}'; use local or ray")
    if executor == "local" and address is not None:
        raise UserError("--address needs --executor ray")
    protocols = check_protocol_names(list(protocols or []))
    sites = list(dict.fromkeys(sites or []))
    unknown_sites = [site for site in sites if site not in SITES]
    if unknown_sites:
        raise UserError(f"unknown capture site(s) {', '.join(unknown_sites)}; use {', '.join(SITES)}")
    robustness = list(dict.fromkeys(robustness or []))
    unknown = [v for v in robustness if v not in ROBUSTNESS]
    if unknown:
        raise UserError(f"unknown robustness variant(s) {', '.join(unknown)}; use {', '.join(ROBUSTNESS)}")
    if "int8" in robustness:
        quantization_kwargs("int8", resolve_device(device))  # no bitsandbytes or no GPU fails here, before any work
    plan = MetricPlan.from_names(metrics)
    specs, chosen_suite = resolve_tasks(tasks, suite)
    evaluators = {spec.name: get_evaluator(spec.family) for spec in specs}  # an unknown family fails here
    for spec in specs:
        if spec.data.source == "mteb":  # an unknown mteb name fails here, before any model loads
            from layerbench.data.mteb_tasks import check_mteb_task

            check_mteb_task(spec.data.task)
    if not plan.metrics and all(e is None for e in evaluators.values()):
        raise UserError("nothing to run: every chosen task is label-free and --no-metrics (or an empty --metrics) turns the metrics off")
    if limit is None and chosen_suite is not None:
        limit = chosen_suite.limit
    if not protocols and chosen_suite is not None:
        protocols = check_protocol_names(chosen_suite.protocols)
    if metric_samples is None:
        metric_samples = (chosen_suite.metric_samples if chosen_suite is not None else None) or 512
    config = RunConfig(
        tuple(models), tuple(s.name for s in specs), str(output), revision, limit, seed, device, dtype, device_map,
        batch_size, max_length, overwrite, cache, tuple(plan.names), metric_samples, pooling, tuple(robustness), tuple(protocols), tuple(sites),
    )
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    summary = RunSummary(as_location(output), run_id)
    checkpoints = {model: resolve_checkpoint(model, revision) for model in models}
    env = environment()
    seed_everything(seed)

    if executor == "ray":
        from layerbench.ray_executor import run_on_ray

        run_on_ray(models, specs, checkpoints, config, plan, run_id, env, summary, address=address, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job)
        return summary
    for m_index, model in enumerate(models, 1):
        runner = ModelRunner(model, checkpoints[model], config, plan, run_id, env, f"model {m_index}/{len(models)}")
        summary.status[model] = {spec.name: runner.run_task(spec, f"task {t_index}/{len(specs)}") for t_index, spec in enumerate(specs, 1)}
        runner.finish()
        summary.forward_passes += runner.stats.forward_passes
        summary.manifests += [p for p in runner.manifests if p not in summary.manifests]
    return summary


class ModelRunner:
    """One model's part of a run: loads the model when a task first needs it, runs tasks one at a time, keeps the manifest.

    The local executor makes one per model in turn; the Ray executor makes one
    inside each model's worker, so a model is loaded once per worker and
    reused across its tasks. A runner made again for the same run (a worker
    restarted after a crash) picks up the manifest its predecessor wrote, and
    skips every task part already stored with the same config.
    """

    def __init__(self, model: str, checkpoint: Any, config: RunConfig, plan: MetricPlan, run_id: str, env: dict[str, Any], label: str) -> None:
        self.model, self.checkpoint, self.config, self.plan, self.run_id, self.env, self.label = model, checkpoint, config, plan, run_id, env, label
        self.store = ResultStore(config.output)
        self.name = checkpoint.name  # the name rows are stored under
        self.handle: ModelHandle | None = None
        self.variant_handles: dict[str, ModelHandle] = {}
        self.stats = CaptureStats()
        previous = self.store.read_manifest(self.name, config.revision, run_id) or {}
        self.timings: dict[str, float] = dict(previous.get("timings_seconds", {}))
        self.task_records: dict[str, Any] = dict(previous.get("tasks", {}))
        self.manifests: list[Path | str] = []

    def run_task(self, spec: TaskSpec, position: str) -> str:
        """Run the parts of ``spec``'s variants not stored yet; ``done`` or ``skipped``."""
        config, store, revision = self.config, self.store, self.config.revision
        prefix = f"[{self.label} · {position}] {self.model} · {spec.name}"
        evaluator = get_evaluator(spec.family)
        variants, missing = task_variants(spec, config)
        if missing:
            _log(f"{prefix}: no {' or '.join(missing)} protocol for the {spec.family} family" + ("; skipped" if not variants else ""))
        # The label-free metrics run once per (site, pooling): the first variant with that pair owns them.
        owners: dict[tuple[str, str], str] = {}
        for v in variants:
            owners.setdefault((v.site, self.checkpoint.pooling if v.pooling == "model" else v.pooling), v.suffix)
        work: list[tuple[Variant, list[str]]] = []
        hashes: dict[tuple[str, str], str] = {}
        for v in variants:
            pooling = self.checkpoint.pooling if v.pooling == "model" else v.pooling
            wanted = [part for part, on in (("scores", evaluator is not None), ("metrics", bool(self.plan.metrics) and owners[(v.site, pooling)] == v.suffix)) if on]
            for part in wanted:
                hashes[(v.suffix, part)] = task_config_hash(v, config, self.name, config.limit, part)
            parts = [part for part in wanted if _needs_run(store, self.name, revision, spec.name, part, hashes[(v.suffix, part)], config.overwrite, v.suffix)]
            if parts:
                work.append((v, parts))
        if not work:
            if variants:
                _log(f"{prefix}: " + ("already done, skipped (--overwrite to redo)" if evaluator is not None or self.plan.metrics else "label-free task and no metrics chosen, skipped"))
            return "skipped"
        if self.handle is None:
            began = time.perf_counter()
            _log(f"{prefix}: loading model")
            self.handle = load_checkpoint(self.checkpoint, device=config.device, dtype=config.dtype, device_map=config.device_map)
            self.timings["load_model"] = self.timings.get("load_model", 0.0) + time.perf_counter() - began
        if spec.family in INTERVENTION_FAMILIES and not self.handle.is_causal:
            # Patching and the logit lens need a causal language model: an encoder skips them, with a reason.
            if any("scores" in parts for _, parts in work):
                _log(f"{prefix}: {spec.family} skipped: it needs a causal language model with an unembedding; {self.model} is not one")
            work = [(v, [p for p in parts if p != "scores"]) for v, parts in work]
            work = [(v, parts) for v, parts in work if parts]
            if not work:
                return "skipped"
        if spec.family == "probe" and any("scores" in parts for _, parts in work):
            for variant in set(config.robustness) & {"bfloat16", "int8"} - set(self.variant_handles):
                _log(f"{prefix}: loading model again in {variant} (robustness variant)")
                self.variant_handles[variant] = load_checkpoint(
                    self.checkpoint, device=config.device, device_map=config.device_map,
                    dtype="bfloat16" if variant == "bfloat16" else "float16", quantization="int8" if variant == "int8" else None,
                )
        rows, record = _run_task(self.handle, spec, work, config, self.plan, self.name, self.run_id, self.stats, prefix, self.variant_handles)
        for (suffix, part), frame in rows.items():
            store.write_task(frame, self.name, revision, spec.name, hashes[(suffix, part)], part, suffix)
        previous = self.task_records.get(spec.name, {}).get("variants", {})
        for v, parts in work:
            record["variants"][v.suffix or "default"]["config_hashes"] = {part: hashes[(v.suffix, part)] for part in parts}
        self.task_records[spec.name] = {**record, "variants": {**previous, **record["variants"]}}
        for stage, seconds in record["seconds"].items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        # Rewritten after every task, so an interrupted run still documents what it finished.
        self._write_manifest("running")
        return "done"

    def finish(self) -> None:
        """Mark this model's manifest complete (nothing to do if no task ran)."""
        if self.handle is not None:
            self._write_manifest("complete")

    def _write_manifest(self, status: str) -> None:
        path = self.store.write_manifest(self.name, self.config.revision, self.run_id,
                                         _manifest(self.run_id, status, self.config, self.handle, self.env, self.task_records, self.timings, self.stats))
        if path not in self.manifests:
            self.manifests.append(path)


def _needs_run(store: ResultStore, model: str, revision: str | None, task: str, part: str, config_hash: str, overwrite: bool, variant: str = "") -> bool:
    """Whether a task part must run: not stored yet, or stored and ``overwrite``; stored from another config is an error."""
    stored = store.stored_hash(model, revision, task, part, variant)
    if stored is None or overwrite:
        return True
    if stored != config_hash:
        raise UserError(
            f"{store.task_path(model, revision, task, part, variant)} holds {part} of '{task}{variant}' from another config; "
            "pass --overwrite to replace them or choose another --output"
        )
    return False
