"""Layers evaluated in parallel: one function over the layers of a capture, in worker processes.

The evaluators that read pooled states (probes, mteb) fit many small models
per layer, each on one core; the layers are independent, so they are mapped
over a pool of ``jobs`` worker processes (joblib's loky backend: fresh
interpreters, reused across calls of one run, arrays over 1 MB passed as
memory maps rather than copies).

Rows are the same bits whatever ``jobs`` is: every call of the function runs
with one BLAS/OpenMP thread (:func:`_one_thread`), in this process for
``jobs=1`` as in a worker, so that no reduction is split differently.

A worker exits when the run that started it is gone (:func:`_watch_parent`):
a run killed outright (``kill -9``) leaves no worker behind, and with no
worker left loky's resource tracker exits too.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

JOBS_VARIABLE = "LAYERBENCH_JOBS"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_jobs() -> int:
    """``$LAYERBENCH_JOBS`` when set, else the cores available: what ``--jobs`` is when not given."""
    value = os.environ.get(JOBS_VARIABLE, "").strip()
    if value:
        try:
            jobs = int(value)
        except ValueError:
            jobs = 0
        if jobs < 1:
            from layerbench.errors import UserError

            raise UserError(f"{JOBS_VARIABLE} must be a positive number of worker processes, got {value!r}")
        return jobs
    return available_cores()


_WATCHING: list[int] = []  # the run a worker watches (set once per process)


def alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): existing is alive
        return True


def _watch_parent(run: int, interval: float = 0.5) -> None:
    """Exit this worker process when the run's process ``run`` is gone.

    loky starts its workers through an intermediate process, so a worker's own
    parent is not the run: the run's pid is handed to every worker when it
    starts (the executor's initializer), and a daemon thread polls it every ``interval`` seconds.
    """
    if _WATCHING:
        return
    _WATCHING.append(run)

    def watch() -> None:
        while alive(run):
            time.sleep(interval)
        os._exit(1)  # nothing to save: the run that wanted this worker's answers is gone

    threading.Thread(target=watch, name="layerbench-run-watch", daemon=True).start()


def _one_thread(function: Callable[[T], R], item: T) -> R:
    """``function(item)`` with one BLAS/OpenMP thread, and one torch thread (torch keeps its own count)."""
    import sys

    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # only if something imported it: a probe alone never needs torch
    threads = torch.get_num_threads() if torch is not None else 0
    try:
        if torch is not None:
            torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            return function(item)
    finally:
        if torch is not None:
            torch.set_num_threads(threads)


def map_layers(function: Callable[[T], R], items: Sequence[T], jobs: int = 1) -> list[R]:
    """``[function(item) for item in items]``, in ``jobs`` worker processes when ``jobs`` > 1, in order.

    ``function`` and each item are pickled (by cloudpickle: closures are fine);
    give each call one layer's states, not the whole stack. Every call runs
    with one BLAS thread, here as in a worker, so the results do not depend on ``jobs``.
    """
    jobs = max(1, min(int(jobs), len(items)))
    if jobs == 1:
        return [_one_thread(function, item) for item in items]
    from joblib import Parallel, delayed

    # loky replaces a worker whose memory grew (mteb's data sets) and says so; the job is rerun, nothing is lost.
    warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given to the executor", category=UserWarning)
    # Each worker watches the run from the moment it starts (not from its first call: a run killed while workers were still
    # importing would leave them behind). joblib passes the initializer to the executor it reuses across calls.
    parallel = Parallel(n_jobs=jobs, backend="loky", initializer=_watch_parent, initargs=(os.getpid(),))
    return list(parallel(delayed(_one_thread)(function, item) for item in items))
