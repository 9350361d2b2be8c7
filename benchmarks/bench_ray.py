"""The quick suite for both packaged models: in-process against a local two-worker Ray cluster, side by side in one run.

Both sides run without the activation cache (so neither reads what the other
wrote) into fresh result folders; the Ray side starts a local cluster with
``--cpus`` CPUs (default 2) and one worker per model with ``cpus_per_job=1``
(so each worker's torch uses one thread, where the in-process run uses all
cores). Printed: wall seconds of each, their ratio, the cluster's start time,
and the scheduling overhead per job: the round trip of an empty actor call
and the start of an actor, measured on the same cluster.

Run: ``python benchmarks/bench_ray.py [--cpus 2]``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

import layerbench
from layerbench.results import KEY, load_results

MODELS = ["sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    import ray

    out = tempfile.mkdtemp(prefix="bench-ray-")
    layerbench.load_model(MODELS[1])  # the one-time GGUF dequantization is nobody's cost here

    began = time.perf_counter()
    local = layerbench.run(MODELS, suite="quick", output=f"{out}/local", cache=False)
    t_local = time.perf_counter() - began

    began = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - began
    began = time.perf_counter()
    remote = layerbench.run(MODELS, suite="quick", output=f"{out}/ray", cache=False, executor="ray")
    t_ray = time.perf_counter() - began

    @ray.remote(num_cpus=1)
    class Empty:
        def ping(self) -> int:
            return 0

    began = time.perf_counter()
    actor = Empty.remote()
    ray.get(actor.ping.remote())
    t_actor = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(200):
        ray.get(actor.ping.remote())
    t_call = (time.perf_counter() - began) / 200
    ray.shutdown()

    jobs = sum(len(per) for per in remote.status.values())
    a = load_results(f"{out}/local").drop(columns="run_id").sort_values(KEY)
    b = load_results(f"{out}/ray").drop(columns="run_id").sort_values(KEY)
    same = len(a) == len(b) and np.allclose(a.value.to_numpy(float), b.value.to_numpy(float), rtol=1e-6, atol=1e-9, equal_nan=True)
    print(f"quick suite, {len(MODELS)} models x {jobs // len(MODELS)} tasks = {jobs} jobs, no activation cache, {os.cpu_count()} CPU cores")
    print(f"{'in-process (one process, all cores)':45} {t_local:8.1f} s")
    print(f"{'Ray, local cluster, one worker per model':45} {t_ray:8.1f} s   (in-process / Ray = {t_local / t_ray:.2f})")
    print(f"{'Ray cluster start (ray.init)':45} {t_init:8.1f} s")
    print(f"scheduling overhead per job: actor start {t_actor * 1000:.0f} ms, empty call round trip {t_call * 1000:.2f} ms")
    print(f"rows: {len(a)} in-process, {len(b)} on Ray, equal values (rtol 1e-6): {same}; statuses equal: {local.status == remote.status}")


if __name__ == "__main__":
    main()
