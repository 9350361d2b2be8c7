"""Layers evaluated in parallel: one function over the layers of a capture, in worker processes.

The evaluators that read pooled states (probes, mteb) fit many small models
per layer, each on one core; the layers are independent, so they are mapped
over a pool of ``jobs`` worker processes (joblib's loky backend: fresh
interpreters, reused across calls of one run, arrays over 1 MB passed as
memory maps rather than copies).

Rows are the same bits whatever ``jobs`` is: every call of the function runs
with one BLAS/OpenMP thread (:func:`_one_thread`), in this process for
``jobs=1`` as in a worker, so that no reduction is split differently.
"""
from __future__ import annotations

import os
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
    return list(Parallel(n_jobs=jobs, backend="loky")(delayed(_one_thread)(function, item) for item in items))
