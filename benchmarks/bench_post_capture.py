"""Post-capture work against the capture: the packed activation cache, the metrics in numpy and torch, layers in 1 and N jobs.

Side by side in one run:

1. Cache (``--cache-model``, default MiniLM; ``--texts`` distinct BBC headlines, default 3,000): the capture with no
   cache, with a cold cache (computed and written) and with a warm one (read), best of ``--repeats`` taken in turn;
   the files the cold cache left. Goals: cold / none <= 1.2, none / warm >= 10, files <= 150.
2. Packaged models (``--models``), per task (``--tasks``): ``layerbench run`` with no cache, once with one job and
   numpy metrics, once with ``--jobs N`` and the metrics in torch on ``--device``; the stage timings of each run's
   manifest (capture, evaluate, metrics) and each stage's ratio to the capture.
3. A synthetic workload shaped like a 7B model: random float32 states ``[33, N=2000, 4096]`` (and LiDAR's views
   ``[33, 512, 8, 4096]``). The pooled metrics (dataset entropy, anisotropy) and LiDAR in numpy and in torch on
   ``--device``; the probe (5 folds and the control task) on one layer per job; writing and reading those states
   through the cache. On a CPU only ``--synthetic-layers`` layers are timed and the 33 are that x 33 / k (printed).

Run: ``python benchmarks/bench_post_capture.py [--device cuda] [--jobs N]``; ``--skip cache,packaged,synthetic`` leaves parts out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from common import synchronize

import layerbench
from layerbench import embed_layers, load_model
from layerbench.capture.cache import ActivationCache
from layerbench.data import load_packaged
from layerbench.evaluators.probe import probe_layers
from layerbench.families.probe import ProbeSettings
from layerbench.metrics import anisotropy, dataset_entropy, lidar
from layerbench.parallel import available_cores

LAYERS, WIDTH, TEXTS, SAMPLED, VIEWS = 33, 4096, 2000, 512, 8  # a 7B model (Llama 2 7B, Mistral 7B) on a 2,000-text task


def clock(fn, device: torch.device | None = None) -> float:
    began = time.perf_counter()
    fn()
    if device is not None:
        synchronize(device)
    return time.perf_counter() - began


def bench_cache(model: str, n: int, repeats: int, device: str) -> None:
    handle = load_model(model, device=device)
    headlines = load_packaged("bbc-news", {"field": "headline"}).texts
    texts = [f"{t} ({i})" for i, t in enumerate((headlines * (1 + n // len(headlines)))[:n])]  # distinct: nothing deduplicated
    scratch = Path(tempfile.mkdtemp(prefix="layerbench-bench-cache-"))
    embed_layers(handle, texts[:64], max_length=64, cache=False)  # warm-up
    none, cold, warm, files = [], [], [], 0
    for r in range(repeats):
        none.append(clock(lambda: embed_layers(handle, texts, max_length=64, cache=False), handle.device))
        root = scratch / f"cold-{r}"
        cold.append(clock(lambda root=root: embed_layers(handle, texts, max_length=64, cache=root), handle.device))
        files = sum(1 for p in root.rglob("*") if p.is_file())
        warm.append(clock(lambda root=root: embed_layers(handle, texts, max_length=64, cache=root), handle.device))
    t_none, t_cold, t_warm = min(none), min(cold), min(warm)
    size = sum(p.stat().st_size for p in (scratch / "cold-0").rglob("*") if p.is_file())
    print(f"\n[cache] {handle.name} on {handle.device}, {n} texts, best of {repeats}")
    print(f"  no cache {t_none:.2f} s   cold {t_cold:.2f} s   warm {t_warm:.3f} s   files {files} ({size / 2**20:.1f} MB)")
    print(f"  cold / no cache {t_cold / t_none:.2f} (goal <= 1.2)   no cache / warm {t_none / t_warm:.1f}x (goal >= 10)   files {files} (goal <= 150)")
    shutil.rmtree(scratch, ignore_errors=True)


def _run_timings(model: str, task: str, jobs: int, metrics_device: str | None, device: str, out: Path) -> dict[str, float]:
    summary = layerbench.run(model, tasks=[task], jobs=jobs, metrics_device=metrics_device, device=device, cache=False, output=str(out), protocols=["layerbench"])
    manifest = json.loads(Path(summary.manifests[0]).read_text())
    return manifest["timings_seconds"]


def bench_packaged(models: list[str], tasks: list[str], jobs: int, device: str, metrics_device: str) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="layerbench-bench-runs-"))
    print(f"\n[runs] stage seconds from each run's manifest (no cache); A: 1 job, numpy metrics; B: {jobs} jobs, metrics in torch on {metrics_device}")
    print(f"  {'model':40} {'task':26} {'capture':>8} {'eval A':>7} {'eval B':>7} {'B/A':>5} {'metr A':>7} {'metr B':>7} {'B/A':>5} {'post B/capture':>14}")
    for model in models:
        for task in tasks:
            a = _run_timings(model, task, 1, None, device, scratch / f"a-{len(list(scratch.iterdir()))}")
            b = _run_timings(model, task, jobs, metrics_device, device, scratch / f"b-{len(list(scratch.iterdir()))}")
            capture = min(a["capture"], b["capture"])
            post_b = b.get("evaluate", 0.0) + b.get("metrics", 0.0)
            print(f"  {model:40} {task:26} {capture:8.1f} {a.get('evaluate', 0):7.1f} {b.get('evaluate', 0):7.1f} {b.get('evaluate', 0) / max(a.get('evaluate', 0), 1e-9):5.2f} "
                  f"{a.get('metrics', 0):7.1f} {b.get('metrics', 0):7.1f} {b.get('metrics', 0) / max(a.get('metrics', 0), 1e-9):5.2f} {post_b / capture:14.2f}")
    shutil.rmtree(scratch, ignore_errors=True)


def bench_synthetic(device: torch.device, timed_layers: int, jobs: int) -> None:
    rng = np.random.default_rng(0)
    k = min(timed_layers, LAYERS)
    scale = LAYERS / k
    # Random states with a decaying spectrum (a real layer is far from isotropic; the timings do not depend on it).
    pooled = (rng.standard_normal((k, TEXTS, WIDTH), dtype=np.float32) * np.geomspace(1, 1e-2, WIDTH, dtype=np.float32))
    views = rng.standard_normal((k, SAMPLED, VIEWS, WIDTH), dtype=np.float32)
    print(f"\n[7B-shaped] L+1 = {LAYERS}, D = {WIDTH}, N = {TEXTS} (LiDAR: {SAMPLED} texts x {VIEWS} views); "
          f"{k} layers timed" + (f", seconds shown for all {LAYERS} (x {scale:.2f})" if k < LAYERS else ""))
    print(f"  {'stage':40} {'numpy':>9} {'torch ' + device.type:>11} {'numpy/torch':>12}")
    for name, fn, data in (("dataset entropy (N x N eigh)", dataset_entropy, pooled), ("anisotropy", anisotropy, pooled), ("LiDAR (D x D Cholesky)", lidar, views)):
        on_host = clock(lambda fn=fn, data=data: fn(data)) * scale
        tensor = torch.from_numpy(data).to(device)
        fn(tensor[:1])  # warm-up: kernels, workspace
        on_device = clock(lambda fn=fn, tensor=tensor: fn(tensor), device) * scale
        del tensor
        check = np.abs(fn(data[:1]) - fn(torch.from_numpy(data[:1]).to(device))).max() / max(abs(float(np.atleast_1d(fn(data[:1]))[0])), 1e-300)
        print(f"  {name:40} {on_host:9.1f} {on_device:11.2f} {on_host / on_device:12.1f}   (relative difference {check:.1e})")
    y = (pooled[:, :, 0].mean(axis=0) > 0).astype(int)
    n_probe = min(jobs, k) if jobs > 1 else 1
    probed = pooled[:n_probe, :400]  # 400 texts: a 2,000 x 4,096 probe is minutes per fit on a CPU; seconds scale with N
    one = clock(lambda: probe_layers(probed, y[:400], ProbeSettings(), jobs=1)) * LAYERS / n_probe
    many = clock(lambda: probe_layers(probed, y[:400], ProbeSettings(), jobs=n_probe)) * LAYERS / n_probe
    print(f"  probe, 400 texts, 5 folds + control, {n_probe} layer(s) timed: 1 job {one:.1f} s, {n_probe} jobs {many:.1f} s for {LAYERS} layers ({many / one:.2f})")
    scratch = Path(tempfile.mkdtemp(prefix="layerbench-bench-7b-"))
    cache = ActivationCache(scratch)
    keys = [f"{i:064x}" for i in range(TEXTS)]
    rows = np.ascontiguousarray(pooled.transpose(1, 0, 2))  # [N, k, D]: one entry per text, as a capture writes them

    def write() -> None:
        with cache.writer("synthetic-7b") as writer:
            for key, row in zip(keys, rows):
                writer.put(key, row)

    t_write = clock(write) * scale
    t_read = clock(lambda: cache.read(keys)) * scale
    files = sum(1 for p in scratch.rglob("*") if p.is_file())
    print(f"  cache: write {t_write:.1f} s, read {t_read:.1f} s for {TEXTS} texts x {LAYERS} layers x {WIDTH} "
          f"({TEXTS * LAYERS * WIDTH * 4 / 2**30:.2f} GB float32), {files} files for the {k} layers timed")
    shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="where models run and the torch metrics compute (auto: cuda if there is one)")
    parser.add_argument("--jobs", type=int, default=available_cores(), help="worker processes of the N-jobs runs (default: the cores available)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=3000, help="texts of the cache benchmark")
    parser.add_argument("--cache-model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--models", nargs="*", default=["sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4"])
    parser.add_argument("--tasks", nargs="*", default=["mteb-bbc-classification", "concept-capitals"])
    parser.add_argument("--synthetic-layers", type=int, default=None, help="layers of the 7B workload timed (default: 4 on a CPU, all 33 on a GPU)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: cache, packaged, synthetic")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    skip = set(filter(None, args.skip.split(",")))
    print(f"device {device}, {available_cores()} cores, torch {torch.__version__}, {args.jobs} jobs")
    if "cache" not in skip:
        bench_cache(args.cache_model, args.texts, args.repeats, device.type)
    if "packaged" not in skip:
        bench_packaged(args.models, args.tasks, args.jobs, device.type, device.type)
    if "synthetic" not in skip:
        bench_synthetic(device, args.synthetic_layers or (LAYERS if device.type == "cuda" else 4), args.jobs)


if __name__ == "__main__":
    main()
