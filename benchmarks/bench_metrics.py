"""The whole label-free metric suite on every layer, against a per-layer, per-prompt loop and the forward passes.

On SmolLM2 (31 layers, 576 wide) and N BBC News headlines (default 1,000),
side by side in one run:

- forward: the capture that produces the states a run's metrics read: the
  N texts (pooled and token states come from the same pass) and V augmented
  views of each (LiDAR's 8; InfoNCE and DiME read the first 2). Cache off.
- ours: what ``layerbench run`` computes: the per-prompt kernels (prompt
  entropy, its normalized form, curvature) on length-sorted padded batches,
  then ``evaluate_metrics`` on the pooled and view states, all batched over layers.
- loop: the same definitions, in float64 like ours, written the way the
  reference code of Skean et al. is structured: for each layer, for each prompt (and for each DiME
  permutation), one small computation at a time; effective rank and the
  normalized entropies recompute their eigenvalues.

Both sides compute the same numbers (checked and printed). Prints seconds
per metric family (best of ``--repeats``, taken in turn), loop/ours, and ours as a fraction of the forward time
(goal: below 1). Run: ``python benchmarks/bench_metrics.py [--n 1000] [--views 8]``.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from layerbench import iter_token_states, load_model
from layerbench.capture import CaptureRequest, capture_layers
from layerbench.data import load_packaged
from layerbench.data.augment import make_views
from layerbench.metrics import list_metrics
from layerbench.metrics.arrays import per_prompt_values
from layerbench.metrics.suite import MetricPlan, evaluate_metrics

# ---- the loop, one small computation at a time ---------------------------------


def _entropy(X: np.ndarray, alpha: float = 1.0) -> float:
    X = X.astype(np.float64)
    Z = X - X.mean(axis=0)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    Z = np.divide(Z, norms, out=np.zeros_like(Z), where=norms > 0)
    K = Z @ Z.T if len(Z) <= Z.shape[1] else Z.T @ Z
    lam = np.linalg.eigvalsh(K)
    lam = lam[lam > lam[-1] * len(K) * np.finfo(float).eps] / lam.sum() if lam.sum() > 0 else np.zeros(0)
    return float(-(lam * np.log(lam)).sum())


def _curvature(X: np.ndarray) -> float:
    v = np.diff(X.astype(np.float64), axis=0)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    u = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    defined = (norms[1:, 0] > 0) & (norms[:-1, 0] > 0)  # a repeated state has no direction
    angles = 2 * np.arctan2(np.linalg.norm(u[1:] - u[:-1], axis=1), np.linalg.norm(u[1:] + u[:-1], axis=1))
    return float(angles[defined].mean()) if defined.any() else float("nan")


def _twonn(X: np.ndarray) -> float:
    X = np.unique(X, axis=0)
    X = X - X.mean(axis=0)
    sq = (X * X).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0)
    np.fill_diagonal(d2, np.inf)
    r = np.sqrt(np.partition(d2, 1, axis=1)[:, :2])
    mu = np.sort(r[:, 1] / r[:, 0])
    n = len(mu)
    keep = min(int(np.floor(0.9 * n)), n - 1)
    x, y = np.log(mu[:keep]), -np.log(1 - np.arange(1, keep + 1) / n)
    return float(x @ y / (x @ x))


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _infonce(A: np.ndarray, B: np.ndarray, t: float = 0.1) -> float:
    logits = _unit(A) @ _unit(B).T / t
    lse_r = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    lse_c = np.log(np.exp(logits - logits.max(0, keepdims=True)).sum(0)) + logits.max(0)
    return float(0.5 * ((lse_r - np.diag(logits)).mean() + (lse_c - np.diag(logits)).mean()))


def _gram_entropy(K: np.ndarray) -> float:
    lam = np.clip(np.linalg.eigvalsh(K / np.trace(K)), 0, None)
    lam = lam[lam > 0]
    return float(-(lam * np.log(lam)).sum())


def _dime(A: np.ndarray, B: np.ndarray, n_permutations: int = 10, seed: int = 0) -> float:
    K_a, K_b = _unit(A) @ _unit(A).T, _unit(B) @ _unit(B).T
    generator = np.random.default_rng(seed)
    mismatched = []
    for _ in range(n_permutations):
        p = generator.permutation(len(A))
        mismatched.append(_gram_entropy(K_a * K_b[np.ix_(p, p)]))
    return float(np.mean(mismatched) - _gram_entropy(K_a * K_b))


def _lidar(views: np.ndarray, delta: float = 1e-4) -> float:
    n, v, d = views.shape
    means = views.mean(1)
    c = means - means.mean(0)
    S_b = c.T @ c / (n - 1)
    w = (views - means[:, None]).reshape(n * v, d)
    S_w = w.T @ w / (n * (v - 1)) + delta * np.eye(d)
    s, U = np.linalg.eigh(S_w)
    root = (U / np.sqrt(s)) @ U.T
    lam = np.clip(np.linalg.eigvalsh(root @ S_b @ root), 0, None)
    p = lam[lam > 0] / lam.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def loop_suite(pooled: np.ndarray, tokens: list[np.ndarray], views: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every metric, layer by layer and prompt by prompt. Returns values ``[L]`` per metric and seconds per family."""
    L, D = pooled.shape[0], pooled.shape[2]
    values: dict[str, list[float]] = {name: [] for name in (m.name for m in list_metrics())}
    seconds = {"tokens": 0.0, "pooled": 0.0, "views": 0.0}
    for layer in range(L):
        began = time.perf_counter()
        entropies = [_entropy(t[layer]) if t.shape[1] >= 2 else np.nan for t in tokens]
        normalized = [_entropy(t[layer]) / np.log(min(t.shape[1], D)) if t.shape[1] >= 2 else np.nan for t in tokens]
        angles = [_curvature(t[layer]) for t in tokens]
        values["prompt_entropy"].append(np.nanmean(entropies))
        values["prompt_entropy_normalized"].append(np.nanmean(normalized))
        values["curvature"].append(np.nanmean(angles))
        seconds["tokens"] += time.perf_counter() - began

        began = time.perf_counter()
        X = pooled[layer].astype(np.float64)
        values["mean_norm"].append(np.linalg.norm(X, axis=1).mean())
        U = _unit(X)
        cosine = U @ U.T
        values["anisotropy"].append((cosine.sum() - np.trace(cosine)) / (len(X) * (len(X) - 1)))
        values["dataset_entropy"].append(_entropy(X))
        values["dataset_entropy_normalized"].append(_entropy(X) / np.log(min(X.shape)))
        values["effective_rank"].append(np.exp(_entropy(X)))
        values["intrinsic_dimension"].append(_twonn(X))
        seconds["pooled"] += time.perf_counter() - began

        began = time.perf_counter()
        V = views[layer].astype(np.float64)
        values["infonce"].append(_infonce(V[:, 0], V[:, 1]))
        values["dime"].append(_dime(V[:, 0], V[:, 1]))
        values["lidar"].append(_lidar(V))
        seconds["views"] += time.perf_counter() - began
    return {k: np.asarray(v) for k, v in values.items()}, seconds


# ---- ours: what a run does ------------------------------------------------------


def our_suite(pooled: np.ndarray, tokens: list[np.ndarray], views: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every metric as a run computes it. Returns values ``[L]`` per metric and seconds per family."""
    plan = MetricPlan.from_names(None)
    began = time.perf_counter()
    # In a run these kernels run inside the capture, batch by batch; here on the same length-sorted batches.
    per_prompt = {name: per_prompt_values(kernel, tokens)[0] for name, kernel in plan.kernels.items()}
    seconds = {"tokens": time.perf_counter() - began}
    values = {}
    for kind in ("tokens", "pooled", "views"):
        began = time.perf_counter()
        rows, _ = evaluate_metrics(MetricPlan(tuple(plan.of_kind(kind))), pooled, per_prompt, views)
        seconds[kind] = seconds.get(kind, 0.0) + time.perf_counter() - began
        values |= {name: group.sort_values("layer")["value"].to_numpy() for name, group in rows.groupby("metric")}
    return values, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="headlines (N)")
    parser.add_argument("--views", type=int, default=8, help="augmented views per headline (V)")
    parser.add_argument("--repeats", type=int, default=2, help="timings per side, taken in turn; the best counts")
    args = parser.parse_args()

    handle = load_model("smollm2-135m-q4", device="cpu")
    texts = load_packaged("bbc-news", {"field": "headline"}).texts[: args.n]
    view_texts = [v for per_text in make_views(texts, args.views, seed=0) for v in per_text]

    began = time.perf_counter()
    pooled = capture_layers(handle, CaptureRequest(texts, pooling="mean", cache=False)).pooled
    t_texts = time.perf_counter() - began
    began = time.perf_counter()
    views = capture_layers(handle, CaptureRequest(view_texts, pooling="mean", cache=False)).pooled.reshape(handle.n_layers + 1, len(texts), args.views, -1)
    t_views = time.perf_counter() - began
    # Token states for both suites (kept in memory here; a run never stores them).
    tokens = [None] * len(texts)
    for index, states in iter_token_states(handle, texts):
        tokens[index] = states
    forward = t_texts + t_views
    L, N, D = pooled.shape
    print(f"SmolLM2, L+1 = {L} layers, N = {N} headlines, D = {D}, {args.views} views each")
    print(f"forward passes (cache off): texts {t_texts:.1f} s + views {t_views:.1f} s = {forward:.1f} s")

    # Taken in turn (ours, loop, ours, loop, ...), best of the repeats per family, so drift on a busy
    # machine hits both columns alike.
    ours_s: dict[str, float] = {}
    loop_s: dict[str, float] = {}
    for _ in range(args.repeats):
        ours, seconds = our_suite(pooled, tokens, views)
        ours_s = {k: min(v, ours_s.get(k, np.inf)) for k, v in seconds.items()}
        loop, seconds = loop_suite(pooled, tokens, views)
        loop_s = {k: min(v, loop_s.get(k, np.inf)) for k, v in seconds.items()}
    # Differences relative to each metric's largest magnitude over layers (DiME is ~0 at some layers).
    worst = {k: float(np.nanmax(np.abs(ours[k] - loop[k])) / np.nanmax(np.abs(loop[k]))) for k in ours}
    name = max(worst, key=worst.get)
    print(f"ours vs loop, largest difference relative to the metric's scale: {worst[name]:.1e} ({name})")
    print(f"{'family':8} {'ours s':>8} {'loop s':>8} {'loop/ours':>10}")
    for family in ("tokens", "pooled", "views"):
        print(f"{family:8} {ours_s[family]:8.2f} {loop_s[family]:8.2f} {loop_s[family] / ours_s[family]:10.1f}")
    total_ours, total_loop = sum(ours_s.values()), sum(loop_s.values())
    print(f"{'all':8} {total_ours:8.2f} {total_loop:8.2f} {total_loop / total_ours:10.1f}")
    print(f"suite / forward: ours {total_ours / forward:.2f}, loop {total_loop / forward:.2f} (goal: ours below 1)")


if __name__ == "__main__":
    main()
