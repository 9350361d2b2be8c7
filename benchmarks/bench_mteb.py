"""Per-layer MTEB on the offline tasks: one pass for all layers (ours) against re-encoding per layer (the reference way).

On SmolLM2 (31 layers), for every offline mteb task of ``layerbench list
tasks`` (``--limit`` items each), side by side in one run, cache off:

- reference, one layer: an mteb encoder that runs the model on every batch
  mteb hands it and returns one layer's pooled states, as the reference code
  of Skean et al. does (it loads the model per layer and encodes the task's
  texts again for each); mteb evaluates it once. Timed for the last layer and
  for layer 15, to show the cost does not depend on the layer.
- ours, all layers: ``layerbench run``'s path: the recording run that finds
  the texts, one capture of every layer, then mteb's evaluation of each of
  the 31 layers from the capture.

Prints seconds per task, ours(all 31) / reference(one layer) (goal: at most
1.3) and the reference's 31 layers (31 x one layer) / ours. Both sides give
mteb the same vectors for the same layer, up to float rounding: each side
pads other batches (checked: relative difference below 1e-3, printed); the
main scores of both sides are printed (ours/reference): a classifier or
k-means can still flip an item on such a difference.
Run: ``python benchmarks/bench_mteb.py [--limit 200] [--model smollm2-135m-q4]``.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from layerbench import CaptureRequest, capture_layers, load_model
from layerbench.data import load_task_data
from layerbench.data.mteb_tasks import model_meta, run_mteb
from layerbench.evaluators.mteb import evaluate_mteb
from layerbench.families import EvaluatorContext
from layerbench.specs import all_tasks


def reencoding_encoder(handle, layer: int, pooling: str, max_length: int | None):
    """The reference way: every ``encode`` call runs the model on its texts and keeps one layer."""
    from mteb.models.abs_encoder import AbsEncoder

    class ReencodingEncoder(AbsEncoder):
        def __init__(self) -> None:
            self.mteb_model_meta = model_meta(f"reencode-layer-{layer}")

            self.vectors: dict[str, np.ndarray] = {}  # what mteb was given, to compare with ours

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            texts = [text for batch in inputs for text in batch["text"]]
            vectors = capture_layers(handle, CaptureRequest(texts, pooling=pooling, max_length=max_length, cache=False)).pooled[layer]
            self.vectors.update(zip(texts, vectors))
            return vectors

    return ReencodingEncoder()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-q4")
    parser.add_argument("--limit", type=int, default=200, help="items per task (pairs, documents, test texts)")
    args = parser.parse_args()
    handle = load_model(args.model)
    last = handle.n_layers
    specs = [spec for spec in all_tasks().values() if spec.family == "mteb"]
    print(f"{handle.name}: {last + 1} layers; {len(specs)} offline mteb tasks, --limit {args.limit}, CPU threads {os.cpu_count()}")
    print(f"{'task':30} {'texts':>6} {'ref L':>7} {'ref 15':>7} {'ours 31':>8} {'ours/ref1':>10} {'ref31/ours':>11}")
    totals = np.zeros(3)
    worst_vector, worst_score = 0.0, 0.0
    for spec in specs:
        data = load_task_data(spec, limit=args.limit)
        task = data.payload
        reference = []
        for layer in (last, 15):
            encoder = reencoding_encoder(handle, layer, "mean", spec.max_length)
            began = time.perf_counter()
            result = run_mteb(encoder, task)
            reference.append((time.perf_counter() - began, result.task_results[0].get_score(), encoder.vectors))
        began = time.perf_counter()
        ours_data = load_task_data(spec, limit=args.limit)  # the recording run is part of our cost
        pooled = capture_layers(handle, CaptureRequest(ours_data.texts, pooling="mean", max_length=spec.max_length, cache=False)).pooled
        rows = evaluate_mteb(EvaluatorContext(ours_data, spec, states={"clean": pooled})).rows
        ours = time.perf_counter() - began
        main_scores = rows[rows.metric == "main_score"].set_index("layer")["value"]
        # Same vectors: each side batches the texts differently, so padding changes the last float bits only.
        index = {text: i for i, text in enumerate(ours_data.texts)}
        for layer, (_, score, vectors) in zip((last, 15), reference):
            theirs = np.stack(list(vectors.values()))
            mine = pooled[layer][[index[t] for t in vectors]]
            relative = float(np.abs(theirs - mine).max() / np.abs(theirs).max())
            assert relative < 1e-3, (spec.name, layer, relative)
            worst_vector = max(worst_vector, relative)
            worst_score = max(worst_score, abs(main_scores[layer] - score))
        totals += [reference[0][0], reference[1][0], ours]
        print(f"{spec.name:30} {len(ours_data):6d} {reference[0][0]:7.1f} {reference[1][0]:7.1f} {ours:8.1f} {ours / reference[0][0]:10.2f} {31 * reference[0][0] / ours:11.1f}"
              f"   scores L {main_scores[last]:.4f}/{reference[0][1]:.4f}, 15 {main_scores[15]:.4f}/{reference[1][1]:.4f}")
    print(f"{'all':30} {'':6} {totals[0]:7.1f} {totals[1]:7.1f} {totals[2]:8.1f} {totals[2] / totals[0]:10.2f} {31 * totals[0] / totals[2]:11.1f}")
    print(f"largest vector difference (relative to the largest entry) {worst_vector:.1e}; largest main-score difference {worst_score:.4f}")
    print("ours/ref1: all 31 layers our way over one layer the reference way (goal <= 1.3); ref31/ours: the reference's 31 layers (31 x one) over ours")


if __name__ == "__main__":
    main()
