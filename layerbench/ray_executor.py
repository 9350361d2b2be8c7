"""``--executor ray``: the (model, task) jobs of a run on a Ray cluster.

One Ray actor per model holds that model (loaded once, on the first task that
needs it) and runs the model's tasks in order through the same
the per-model runner (:class:`layerbench.runner.ModelRunner`) the local executor uses, so the rows are
those of a local run. Actors of different models run side by side as the
cluster's resources allow: each asks for ``cpus_per_job`` CPUs and, when the
device is a GPU, ``gpus_per_job`` GPUs (0.5 puts two models on one GPU).

Fault tolerance is Ray's: an actor whose process dies is restarted (the model
is loaded again) and the job it was running is retried. A job never redoes
finished work: every task part is skipped when its results are stored with
the same config hash, and result files are written whole or not at all, so a
retry neither loses nor duplicates rows. The driver shows one progress bar
over all jobs; the workers' log lines reach the driver through Ray.

Only this module imports Ray, and only when ``--executor ray`` is chosen.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from layerbench.errors import UserError
from layerbench.metrics.suite import MetricPlan
from layerbench.models.resolve import Checkpoint
from layerbench.run_config import RunConfig
from layerbench.runner import ModelRunner, RunSummary
from layerbench.specs import TaskSpec
from layerbench.storage import as_location, is_url

RETRIES = 3
FORWARDED_ENV = ("LAYERBENCH_CACHE", "LAYERBENCH_ACTIVATION_CACHE", "LAYERBENCH_MEMORY_BUDGET", "LAYERBENCH_TASKS", "HF_HUB_OFFLINE", "HF_HOME", "TQDM_DISABLE")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'layerbench[ray]' (or pip install ray)") from None
    return ray


def run_on_ray(models: list[str], specs: list[TaskSpec], checkpoints: dict[str, Checkpoint], config: RunConfig, plan: MetricPlan, run_id: str,
               env: dict[str, Any], summary: RunSummary) -> None:
    """Run every (model, task) job on Ray and fill ``summary`` (status per job, forward passes, manifests).

    Connects to ``config.address`` (``auto``, ``ray://host:port``), or starts a local
    cluster when None and Ray is not initialized yet; an initialized Ray (a
    test's ``ray.init(num_cpus=2)``) is used as it is.

    Raises:
        UserError: Ray is not installed or the cluster cannot be reached; a job failed after its retries.
    """
    ray = _import_ray()
    from tqdm.auto import tqdm

    from layerbench.models.loading import resolve_device

    if not ray.is_initialized():
        try:
            ray.init(address=config.address, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot reach the Ray cluster at '{config.address or 'a new local cluster'}': {str(exc).splitlines()[0]}") from None
    on_gpu = resolve_device(config.device).type == "cuda" if config.device != "auto" else bool(ray.cluster_resources().get("GPU"))
    if not is_url(config.output):  # workers may start in another folder: give them the absolute path
        config = config.model_copy(update={"output": str(Path(config.output).resolve())})
    # The driver's settings travel with the job: cache folder, offline Hub, progress bars, memory budget.
    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    worker = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)(ModelWorker)
    actors = {
        model: worker.options(num_cpus=config.cpus_per_job, num_gpus=config.gpus_per_job if on_gpu else 0, name=f"layerbench-{run_id}-{i}",
                              runtime_env={"env_vars": env_vars}).remote(
            checkpoints[model], config, plan, run_id, env, f"model {i}/{len(models)}")
        for i, model in enumerate(models, 1)
    }
    jobs = {actors[model].run_task.remote(spec, f"task {t}/{len(specs)}"): (model, spec.name) for model in models for t, spec in enumerate(specs, 1)}
    for model in models:
        summary.status[model] = {}
    pending = list(jobs)
    with tqdm(total=len(jobs), desc=f"Ray: {len(models)} model(s) x {len(specs)} task(s)", unit="job") as progress:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            model, task = jobs[done[0]]
            try:
                summary.status[model][task] = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, UserError):
                    raise cause from None  # the user's mistake, found in the worker: one line, as in a local run
                # Anything else is a failure the user cannot fix by changing an option: show the worker's traceback
                # (a RayTaskError's text holds it) and keep it as the cause.
                print(f"job ({model}, {task}) failed in its Ray worker:\n{exc}", file=sys.stderr, flush=True)
                raise UserError(f"job ({model}, {task}) failed after {RETRIES} retries: {str(exc).splitlines()[0]} (the worker's traceback is above)") from exc
            progress.set_postfix_str(f"{model} · {task}: {summary.status[model][task]}")
            progress.update()
    for actor in actors.values():
        passes, manifests = ray.get(actor.finish.remote())
        summary.forward_passes += passes
        summary.manifests += [m for m in map(as_location, manifests) if m not in summary.manifests]
        ray.kill(actor)


class ModelWorker:
    """A Ray actor holding one model's :class:`~layerbench.runner.ModelRunner` (made a Ray actor in :func:`run_on_ray`)."""

    def __init__(self, checkpoint: Checkpoint, config: RunConfig, plan: MetricPlan, run_id: str, env: dict[str, Any], label: str) -> None:
        import torch

        # Use the CPUs Ray gave this worker, not every core of the node (workers share the node).
        cpus = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, torch.get_num_threads())
        torch.set_num_threads(cpus)
        self.runner = ModelRunner(checkpoint, config, plan, run_id, env, label)

    def run_task(self, spec: TaskSpec, position: str) -> str:
        return self.runner.run_task(spec, position)

    def finish(self) -> tuple[int, list[str]]:
        self.runner.finish()
        return self.runner.stats.forward_passes, [str(p) for p in self.runner.manifests]
