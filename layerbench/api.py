"""What the CLI and Python users call: :func:`run` checks every input, resolves the tasks, and drives an executor.

The local executor runs each model's :class:`~layerbench.runner.ModelRunner`
in this process; ``executor="ray"`` hands the same runners to
:mod:`layerbench.ray_executor`. Both sit above :mod:`layerbench.runner`.
"""
from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from layerbench import preflight
from layerbench.environment import environment
from layerbench.errors import UserError
from layerbench.families import get_family
from layerbench.metrics.suite import MetricPlan
from layerbench.models.loading import quantization_kwargs, resolve_device
from layerbench.models.resolve import resolve_checkpoint
from layerbench.results import ResultStore, check_reference, load_results
from layerbench.run_config import RunConfig
from layerbench.runner import ModelRunner, RunSummary, seed_everything
from layerbench.specs import SuiteSpec, TaskSpec, get_suite, get_task
from layerbench.specs.protocols import check_protocol_names
from layerbench.specs.schema import MtebSource
from layerbench.storage import as_location

__all__ = ["RunConfig", "RunSummary", "load_results", "resolve_config", "resolve_tasks", "run"]


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


def resolve_config(config: RunConfig) -> tuple[RunConfig, list[TaskSpec], MetricPlan]:
    """What a config means on this machine and with these registries: the config with the suite's choices filled in, the task specs and the metric plan.

    Checks what :class:`RunConfig` cannot alone: the device exists, int8
    has bitsandbytes and a GPU, every task, suite, protocol, metric and mteb
    task name is known, and there is something to run.
    """
    resolve_device(config.device)  # an absent device (cuda without a GPU) fails here, before any work
    if "int8" in config.robustness:
        quantization_kwargs("int8", resolve_device(config.device))  # no bitsandbytes or no GPU fails here
    protocols = check_protocol_names(list(config.protocols))
    plan = MetricPlan.from_names(None if config.metrics is None else list(config.metrics))
    specs, chosen_suite = resolve_tasks(list(config.tasks) or None, config.suite)
    families = [get_family(spec.family) for spec in specs]  # an unknown family fails here
    for spec in specs:
        if isinstance(spec.data, MtebSource):  # an unknown mteb name fails here, before any model loads
            from layerbench.data.mteb_tasks import check_mteb_task

            check_mteb_task(spec.data.task)
    if not plan.metrics and all(family.reads == "nothing" for family in families):
        raise UserError("nothing to run: every chosen task is label-free and --no-metrics (or an empty --metrics) turns the metrics off")
    if not protocols and chosen_suite is not None:
        protocols = check_protocol_names(chosen_suite.protocols)
    suite_samples = chosen_suite.metric_samples if chosen_suite is not None else None
    resolved = config.model_copy(update={
        "tasks": tuple(spec.name for spec in specs),
        "limit": config.limit if config.limit is not None or chosen_suite is None else chosen_suite.limit,
        "metrics": tuple(plan.names),
        "metric_samples": config.metric_samples or suite_samples or 512,
        "max_length": config.max_length or (chosen_suite.max_length if chosen_suite is not None else None),
        "protocols": tuple(protocols),
    })
    return resolved, specs, plan


def run(models: RunConfig | str | Sequence[str], /, **options: Any) -> RunSummary:
    """Run tasks on models and write tidy rows and a manifest per model under the config's ``output``.

    ``models`` is a :class:`~layerbench.run_config.RunConfig`, or the models
    with any of its fields as keywords (``run("smollm2-135m-q4", suite="quick",
    output="my-results")``); the fields are documented there.

    Every task gets its evaluator's scores (label-free tasks have none) and
    the label-free metric suite (``metrics``: None for all registered, ``[]``
    for none); token and view metrics read a seeded sample of at most
    ``metric_samples`` texts per task. ``protocols`` runs every task under
    these protocols (:mod:`layerbench.specs.protocols`: ``layerbench``,
    ``paper`` for each family's paper protocol, or one of the names the
    families list); a task whose family has no such protocol is skipped.
    ``sites`` captures every task at these sites, all from the same forward
    passes. ``robustness`` adds rows to probe tasks: ``noise`` captures every
    text again behind a seeded random-letter prefix; ``bfloat16`` and ``int8``
    load the model again in that precision.

    ``executor="ray"`` spreads the (model, task) jobs over a Ray cluster
    (``address``: ``auto``, ``ray://...``, or None for a local one): one
    worker per model, loaded once and reused across its tasks, holding
    ``gpus_per_job`` GPUs (a fraction shares one) when the device is a GPU and
    ``cpus_per_job`` CPUs; a worker that dies is restarted and its job retried.
    ``output`` and the activation cache must be a path every worker can reach.
    The default ``local`` runs in this process and never imports Ray.

    A (model, task) part whose results already exist with the same config is
    skipped, so an interrupted run resumes where it stopped; existing results
    from another config are an error unless ``update`` or ``overwrite``; a
    reference results folder is never written without ``reference``. Every bad input is
    rejected before any model is loaded or file written.
    """
    if isinstance(models, RunConfig) and options:
        raise TypeError("run() takes a RunConfig or the models with keyword options, not both")
    config = models if isinstance(models, RunConfig) else RunConfig.of(models, **options)
    config, specs, plan = resolve_config(config)
    output = config.output
    check_reference(output, config.reference)
    for path in ResultStore(output).mark_interrupted():
        print(f"marked {path} interrupted: the run that wrote it was killed", file=sys.stderr)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    summary = RunSummary(as_location(output), run_id)
    models = list(config.models)
    checkpoints = {model: resolve_checkpoint(model, config.revision) for model in models}
    preflight.check(config, specs, checkpoints)  # every problem the specs and the models' configurations show, before any weights load
    env = environment()
    seed_everything(config.seed)

    if config.executor == "ray":
        from layerbench.ray_executor import run_on_ray

        run_on_ray(models, specs, checkpoints, config, plan, run_id, env, summary)
        return _derived_parts(specs, summary)
    for m_index, model in enumerate(models, 1):
        runner = ModelRunner(checkpoints[model], config, plan, run_id, env, f"model {m_index}/{len(models)}")
        summary.status[model] = {}
        task = None
        try:
            for t_index, spec in enumerate(specs, 1):
                task = spec.name
                summary.status[model][spec.name] = runner.run_task(spec, f"task {t_index}/{len(specs)}")
        except BaseException as exc:
            # Ctrl-C, or an error that stops the run; a killed process cannot say so, and the next run marks it (ResultStore.mark_interrupted).
            interrupted = isinstance(exc, KeyboardInterrupt)
            runner.finish("interrupted" if interrupted else "failed", error=None if interrupted else (str(exc).splitlines() or [type(exc).__name__])[0], task=task)
            raise
        runner.finish()
        summary.forward_passes += runner.stats.forward_passes
        summary.manifests += [p for p in runner.manifests if p not in summary.manifests]
    return _derived_parts(specs, summary)


def _derived_parts(specs: list[TaskSpec], summary: RunSummary) -> RunSummary:
    """After the models ran, the parts derived from what they stored: the selection-honest best layer of every task with
    item records (:mod:`layerbench.honest_best`), and the rows across models of the tasks whose family has them
    (similarity, :mod:`layerbench.across_models`), from what every model in the output stored."""
    from layerbench.honest_best import write_honest_best

    written = write_honest_best(summary.output)
    if written:
        print(f"selection-honest best layers rewritten for {len(written)} task variants", file=sys.stderr)
    for spec in specs:
        written = get_family(spec.family).write_across_models(summary.output, spec.name)
        if written:
            print(f"{spec.name}: rows across models rewritten for {len(written)} models", file=sys.stderr)
    return summary
