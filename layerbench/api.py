"""The runner: what the CLI and Python users call.

Data flows one way: spec -> data -> capture -> evaluator -> rows -> store.
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

from layerbench.capture import CaptureStats, embed_layers
from layerbench.data import TextDataset, load_local, load_packaged
from layerbench.errors import UserError
from layerbench.evaluators import get_evaluator
from layerbench.fingerprint import hash_value
from layerbench.manifest import environment
from layerbench.models import ModelHandle
from layerbench.models.resolve import resolve_checkpoint
from layerbench.models.loading import DTYPES, load_checkpoint, resolve_device
from layerbench.results import ResultStore, complete_rows, load_results
from layerbench.specs import TaskSpec, get_suite, get_task
from layerbench.specs.schema import PackagedSource

__all__ = ["RunConfig", "RunSummary", "load_results", "resolve_tasks", "run"]


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


@dataclass
class RunSummary:
    """What a run did: per (model, task) one of ``done`` / ``skipped``, and where things went."""

    output: Path
    run_id: str
    status: dict[str, dict[str, str]] = field(default_factory=dict)
    forward_passes: int = 0
    manifests: list[Path] = field(default_factory=list)


def resolve_tasks(tasks: list[str] | None, suite: str | None) -> tuple[list[TaskSpec], int | None]:
    """Task specs named directly or by a suite, and the suite's example limit."""
    if tasks and suite:
        raise UserError("give --tasks or --suite, not both")
    if tasks:
        return [get_task(name) for name in tasks], None
    chosen = get_suite(suite or "default")
    return [get_task(name) for name in chosen.tasks], chosen.limit


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch from the run's one seed."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(spec: TaskSpec) -> TextDataset:
    source = spec.data
    if isinstance(source, PackagedSource):
        data = load_packaged(source.dataset, source.options)
    else:
        data = load_local(source.path, source.text_field, source.label_field)
    if len(data) == 0:
        raise UserError(f"task '{spec.name}': its data set is empty")
    return data


def task_config_hash(spec: TaskSpec, config: RunConfig, model: str, limit: int | None) -> str:
    """Identity of one (model, task) result: what would change its numbers."""
    return hash_value(
        {
            "task": spec.model_dump(),
            "model": model,
            "revision": config.revision,
            "limit": limit,
            "seed": config.seed,
            "dtype": config.dtype,
            "max_length": config.max_length,
        }
    )


def _run_task(handle: ModelHandle, spec: TaskSpec, config: RunConfig, model_name: str, run_id: str, stats: CaptureStats, prefix: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Data -> capture -> evaluator -> tidy rows for one (model, task), and its manifest record."""
    began = time.perf_counter()
    data = load_data(spec).subsample(config.limit, config.seed)
    t_data = time.perf_counter() - began
    pooling = handle.default_pooling if spec.pooling == "model" else spec.pooling
    _log(f"{prefix}: {len(data)} texts, {pooling} pooling, {handle.n_layers + 1} layers")
    began = time.perf_counter()
    passes_before = stats.forward_passes
    states = embed_layers(handle, data.texts, pooling, config.batch_size, config.max_length or spec.max_length, cache=config.cache, stats=stats)
    t_capture = time.perf_counter() - began
    began = time.perf_counter()
    scores = get_evaluator(spec.family)(states, data, spec)
    rows = complete_rows(scores, model=model_name, revision=config.revision, task=spec.name, subset=spec.subset, split=spec.split, n_layers=handle.n_layers, run_id=run_id)
    t_eval = time.perf_counter() - began
    record = {
        "family": spec.family,
        "version": spec.version,
        "pooling": pooling,
        "n": len(data),
        "rows": len(rows),
        "forward_passes": stats.forward_passes - passes_before,
        "data": data.provenance,
        "seconds": {"data": t_data, "capture": t_capture, "evaluate": t_eval},
    }
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
) -> RunSummary:
    """Run tasks on models and write tidy rows and a manifest per model under ``output``.

    A (model, task) whose results already exist with the same config is
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
    specs, suite_limit = resolve_tasks(tasks, suite)
    for spec in specs:
        get_evaluator(spec.family)
    limit = limit if limit is not None else suite_limit
    config = RunConfig(tuple(models), tuple(s.name for s in specs), str(output), revision, limit, seed, device, dtype, device_map, batch_size, max_length, overwrite, cache)
    store = ResultStore(output)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    summary = RunSummary(Path(output), run_id)
    checkpoints = {model: resolve_checkpoint(model, revision) for model in models}
    env = environment()
    seed_everything(seed)

    for m_index, model in enumerate(models, 1):
        handle: ModelHandle | None = None
        stats = CaptureStats()
        timings: dict[str, float] = {}
        task_records: dict[str, Any] = {}
        summary.status[model] = {}
        stored_name = checkpoints[model].name
        for t_index, spec in enumerate(specs, 1):
            prefix = f"[model {m_index}/{len(models)} · task {t_index}/{len(specs)}] {model} · {spec.name}"
            config_hash = task_config_hash(spec, config, stored_name, limit)
            stored = store.stored_hash(stored_name, revision, spec.name)
            if stored == config_hash and not overwrite:
                _log(f"{prefix}: already done, skipped (--overwrite to redo)")
                summary.status[model][spec.name] = "skipped"
                continue
            if stored is not None and not overwrite:
                raise UserError(
                    f"{store.task_path(stored_name, revision, spec.name)} holds results of '{spec.name}' from another config; "
                    "pass --overwrite to replace them or choose another --output"
                )
            if handle is None:
                began = time.perf_counter()
                _log(f"{prefix}: loading model")
                handle = load_checkpoint(checkpoints[model], device=device, dtype=dtype, device_map=device_map)
                timings["load_model"] = time.perf_counter() - began
            rows, record = _run_task(handle, spec, config, stored_name, run_id, stats, prefix)
            store.write_task(rows, stored_name, revision, spec.name, config_hash)
            task_records[spec.name] = {"config_hash": config_hash, **record}
            for stage, seconds in record["seconds"].items():
                timings[stage] = timings.get(stage, 0.0) + seconds
            summary.status[model][spec.name] = "done"
            # Rewritten after every task, so an interrupted run still documents what it finished.
            path = store.write_manifest(stored_name, revision, run_id, _manifest(run_id, "running", config, handle, env, task_records, timings, stats))
            if path not in summary.manifests:
                summary.manifests.append(path)
        if handle is not None:
            store.write_manifest(stored_name, revision, run_id, _manifest(run_id, "complete", config, handle, env, task_records, timings, stats))
        summary.forward_passes += stats.forward_passes
    return summary


