"""Layer similarity, timed against the capture of the same texts, and ours against the naive way, side by side in one run.

Per model: the capture of the 1,000 mixed sentences (mean pooling, every layer, no activation cache), then the whole
``similarity-layers`` evaluation (both maps, the curves with their jackknife and nulls, the headline, and the sketches a
run keeps: k-NN lists and rank-128 Gram sketches), and the CKA map two ways: ours (one U-centred Gram matrix per layer,
one matrix product: :func:`layerbench.metrics.similarity.cka_matrix`) and the naive way (platonic-rep's: the measure
called for every pair of layers, each call building its two Gram matrices and three HSICs). The maps must agree within
1e-9. The issue's goal: the evaluation at most the capture's time.

Across models: every pair's rows (both maps, best matches with their errors and shuffled nulls) from the stored sketches
(:func:`layerbench.across_models.across_rows`), timed against the captures of the same texts, and the sketched CKA
against the exact CKA from the states (which comparing a later model would otherwise need recaptured).

Run: ``python benchmarks/bench_similarity.py [--models smollm2-135m-q4,...] [--texts 1000] [--naive-pairs 40]``
(the naive map is timed on ``--naive-pairs`` pairs and scaled to all K² of them: on 2 cores a whole naive map of
SmolLM2 takes many minutes).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import itertools

import numpy as np
import torch

from layerbench import CaptureRequest, capture_layers, load_model
from layerbench.across_models import across_rows
from layerbench.data import load_packaged
from layerbench.evaluators.similarity import neighbour_lists, prepared_layers, similarity_rows
from layerbench.families.similarity import SimilaritySettings
from layerbench.metrics.similarity import cka_matrix, hsic_unbiased, sketch_gram
from layerbench.results.sketches import complete_sketches, decode_sketches, sketch_frame, texts_id


def naive_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """One pair the naive way: both Gram matrices, then HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), as platonic-rep calls it."""
    K, L = X @ X.T, Y @ Y.T
    return hsic_unbiased(K, L) / np.sqrt(hsic_unbiased(K, K) * hsic_unbiased(L, L))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm-l6,multilingual-e5-small-q4,smollm2-135m-q4,gemma3-270m-base-q4")
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--naive-pairs", type=int, default=40)
    args = parser.parse_args()
    data = load_packaged("mixed-sentences", {"n": args.texts})
    settings = SimilaritySettings()
    print(f"{len(data)} mixed sentences, mean pooling, max 64 tokens; CPU, {torch.get_num_threads()} threads")
    print(f"  {'model':28s} {'layers':>6s} {'capture':>9s} {'evaluate':>9s} {'eval/capt':>9s} {'CKA map':>8s} {'naive map':>10s} {'naive/ours':>10s}")
    stacks, sketches, captures = {}, [], {}
    for name in args.models.split(","):
        handle = load_model(name, device="cpu")
        began = time.perf_counter()
        pooled = capture_layers(handle, CaptureRequest(data.texts, "mean", max_length=64, cache=False)).pooled
        t_capture = time.perf_counter() - began
        K = pooled.shape[0]
        began = time.perf_counter()
        X = prepared_layers(pooled, settings)
        lists = neighbour_lists(X, settings)
        similarity_rows(X, list(range(K)), handle.n_layers, settings, lists)
        frame = sketch_frame(list(range(K)), lists, [sketch_gram(x, settings.sketch_rank) for x in X], texts_id(data.texts), True, settings.clamp_quantile)
        t_evaluate = time.perf_counter() - began
        sketches.append(decode_sketches(complete_sketches(frame, model=name, revision=None, task="similarity-layers", protocol="layerbench", site="residual",
                                                          n_layers=handle.n_layers, run_id="bench")))
        stack = np.stack(X)
        stacks[name], captures[name] = stack, t_capture
        began = time.perf_counter()
        ours = cka_matrix(stack, stack)
        t_map = time.perf_counter() - began
        pairs = [(i, j) for i in range(K) for j in range(K)]
        sample = [pairs[p] for p in np.random.default_rng(0).choice(len(pairs), size=min(args.naive_pairs, len(pairs)), replace=False)]
        began = time.perf_counter()
        naive = [naive_cka(stack[i], stack[j]) for i, j in sample]
        t_naive = (time.perf_counter() - began) * len(pairs) / len(sample)
        worst = max(abs(ours[i, j] - v) for (i, j), v in zip(sample, naive))
        assert worst < 1e-9, f"{name}: the maps differ by {worst:.2e}"
        print(f"  {name:28s} {K:6d} {t_capture:8.1f}s {t_evaluate:8.1f}s {t_evaluate / t_capture:9.2f} {t_map:7.2f}s {t_naive:9.1f}s {t_naive / t_map:9.0f}x"
              f"   (max |ours - naive| {worst:.1e} on {len(sample)} pairs)")
    if len(sketches) < 2:
        return
    began = time.perf_counter()
    rows = across_rows(sketches)
    t_across = time.perf_counter() - began
    t_captures = sum(captures.values())
    errors = []
    for a, b in itertools.combinations(range(len(sketches)), 2):
        mine = rows[a][(rows[a].other_model == sketches[b].model) & (rows[a].metric == "cka")]
        sketched = mine.pivot(index="layer", columns="source_layer", values="value").to_numpy(float)
        errors.append(np.abs(sketched - cka_matrix(stacks[sketches[a].model], stacks[sketches[b].model])).ravel())
    error = np.concatenate(errors)
    pairs = len(sketches) * (len(sketches) - 1) // 2
    print(f"\nacross models: {pairs} pairs, {sum(len(r) for r in rows.values()):,} rows from the stored sketches in {t_across:.1f} s; "
          f"the captures of the same texts {t_captures:.1f} s (across / captures {t_across / t_captures:.2f}); "
          f"sketched CKA against the exact: max |error| {error.max():.3f}, mean {error.mean():.3f} over {len(error):,} layer pairs")


if __name__ == "__main__":
    main()
