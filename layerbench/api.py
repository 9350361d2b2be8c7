"""What the CLI and Python users call: :func:`run` checks every input, resolves the tasks, and drives an executor.

The local executor runs each model's :class:`~layerbench.runner.ModelRunner`
in this process; ``executor="ray"`` hands the same runners to
:mod:`layerbench.ray_executor`. Both sit above :mod:`layerbench.runner`.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

from layerbench.choices import DTYPES, EXECUTORS, POOLINGS, ROBUSTNESS, SITES, unknown_choice
from layerbench.errors import UserError
from layerbench.evaluators import get_evaluator
from layerbench.manifest import environment
from layerbench.metrics.suite import MetricPlan
from layerbench.models.loading import quantization_kwargs, resolve_device
from layerbench.models.resolve import resolve_checkpoint
from layerbench.results import load_results
from layerbench.runner import ModelRunner, RunConfig, RunSummary, seed_everything
from layerbench.specs import SuiteSpec, TaskSpec, get_suite, get_task
from layerbench.specs.protocols import check_protocol_names
from layerbench.specs.schema import MtebSource
from layerbench.storage import as_location

__all__ = ["ROBUSTNESS", "RunConfig", "RunSummary", "load_results", "resolve_tasks", "run"]


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
    return TaskSpec(name=slug, family="mteb", description=f"mteb task {name}, every layer", data=MtebSource(source="mteb", task=name, languages=languages),
                    pooling="mean", main_score="main_score")


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
        raise UserError(unknown_choice("dtype", dtype, DTYPES))
    if limit is not None and limit < 2:
        raise UserError(f"--limit must be at least 2 examples, got {limit}")
    if metric_samples is not None and metric_samples < 2:
        raise UserError(f"--metric-samples must be at least 2 texts, got {metric_samples}")
    if pooling is not None and pooling not in POOLINGS:
        raise UserError(unknown_choice("pooling", pooling, POOLINGS))
    if executor not in EXECUTORS:
        raise UserError(unknown_choice("executor", executor, EXECUTORS))
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
