"""Layer similarity across models: every layer of one model against every layer of another, from their stored sketches.

A similarity run keeps each layer's k-NN lists and Gram sketch (:mod:`layerbench.results.sketches`); a model run later
on the same texts is compared with every stored one without capturing it again. For each ordered pair (model A, other
model B) of one task variant, the rows of A (``model = A``, ``other_model = B``; ``layer`` is A's, so ``depth`` is A's
relative depth):

- maps: ``cka`` (the CKA of the sketches, :func:`~layerbench.metrics.similarity.cka_of_sketches`) and ``mutual_knn``
  (exact, from the lists) for every (A layer ``layer``, B layer ``source_layer``);
- best matches, per A layer: ``<measure>_best_match`` (the largest value over B's layers) with its standard error,
  ``<measure>_best_match_depth`` (the relative depth of B's layer that gives it; Csordás et al. 2025 find matches at
  equal relative depth), and ``<measure>_best_match_null`` (the largest value over B's layers with B's texts shuffled,
  seeded: what chance alone reaches when the best of B's layers is picked). Standard errors: mutual k-NN's from its
  per-text agreements (std / sqrt N); CKA's the spread of the sketched value over ``half_samples`` random halves of the
  texts (the sketches restricted to the half, not centred again).

Stored in A's folder as ``<A>/across/<task><variant>.parquet``, rewritten whenever the set of stored sketches changes
(:func:`write_across_models`, which ``layerbench run`` calls after every run of a similarity task); the file carries a
hash of the sketches it was made from, so an unchanged set is not computed again.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from layerbench.fingerprint import hash_value
from layerbench.metrics.similarity import cka_of_sketches, knn_agreements, mutual_knn_matrix
from layerbench.results.manifest import Part
from layerbench.results.rows import layer_row, summary_row
from layerbench.results.schema import complete_rows
from layerbench.results.sketches import LayerSketches, load_sketches
from layerbench.results.store import ResultStore
from layerbench.specs.protocols import variant_suffix


def shuffled_lists(lists: np.ndarray, order: np.ndarray) -> np.ndarray:
    """k-NN lists ``[L, N, k]`` of the same representations with their texts reordered by ``order`` (text i of the result
    is text ``order[i]``): each row moved and its neighbours relabelled, so that agreement with another model's lists
    is what an unrelated pairing of the texts gives."""
    relabel = np.argsort(order)
    return relabel[lists[:, order]]


def pair_rows(a: LayerSketches, b: LayerSketches, cka: np.ndarray, cka_null: np.ndarray, knn: np.ndarray, knn_null: np.ndarray,
              halves: list[np.ndarray]) -> list[dict[str, Any]]:
    """The rows of ``a`` against ``b`` (module docstring) from the maps ``[La, Lb]`` of both measures and their nulls."""
    rows: list[dict[str, Any]] = []
    n = a.knn.shape[1]
    depth_b = b.depths
    for name, grid, null in (("cka", cka, cka_null), ("mutual_knn", knn, knn_null)):
        rows += [layer_row(name, la, grid[i, j], n=n, higher_is_better=None, source_layer=lb) for i, la in enumerate(a.layers) for j, lb in enumerate(b.layers)]
        matches = [(i, int(np.nanargmax(grid[i]))) for i in range(len(a.layers)) if not np.all(np.isnan(grid[i]))]  # (A layer, its best B layer)
        for i, j in matches:
            if name == "cka":
                spread = [cka_of_sketches([a.grams[i]], [b.grams[j]], rows=h)[0][0, 0] for h in halves]
                stderr = float(np.nanstd(spread, ddof=1)) if len(halves) > 1 else float("nan")
            else:
                stderr = float(np.std(knn_agreements(a.knn[i], b.knn[j]), ddof=1) / np.sqrt(n))
            la = a.layers[i]
            rows.append(layer_row(f"{name}_best_match", la, grid[i, j], n=n, stderr=stderr, higher_is_better=None))
            rows.append(layer_row(f"{name}_best_match_depth", la, depth_b[j], n=n, higher_is_better=None))
            rows.append(layer_row(f"{name}_best_match_null", la, float(np.nanmax(null[i])), n=n, higher_is_better=None))
        if matches:  # how far, on average, a layer's best match lies from its own relative depth
            gaps = [abs(depth_b[j] - a.depths[i]) for i, j in matches]
            rows.append(summary_row(f"{name}_best_match_depth_gap", float(np.mean(gaps)), n=n, higher_is_better=None))
    return [r | {"subset": "all", "other_model": b.model} for r in rows]


def across_rows(sketches: list[LayerSketches], seed: int = 0, half_samples: int = 50) -> dict[int, pd.DataFrame]:
    """Every ordered pair's rows (:func:`pair_rows`) of one task variant's stored sketches, completed as result rows:
    ``{position in sketches: rows of that model against all the others}``. Each unordered pair's maps are computed once;
    its shuffle and halves are seeded by ``seed`` alone, so a pair's rows do not depend on which other models are stored."""
    out: dict[int, list[pd.DataFrame]] = defaultdict(list)
    for ia in range(len(sketches)):
        for ib in range(ia + 1, len(sketches)):
            a, b = sketches[ia], sketches[ib]
            n = a.knn.shape[1]
            rng = np.random.default_rng([seed, 0xAC])
            order = rng.permutation(n)
            halves = [np.sort(rng.choice(n, size=n // 2, replace=False)) for _ in range(half_samples)]
            cka, _ = cka_of_sketches(a.grams, b.grams)
            cka_null_ab, _ = cka_of_sketches(a.grams, b.grams, rows_b=order)
            cka_null_ba, _ = cka_of_sketches(b.grams, a.grams, rows_b=order)
            knn = mutual_knn_matrix(a.knn, b.knn)
            knn_null_ab = mutual_knn_matrix(a.knn, shuffled_lists(b.knn, order))
            knn_null_ba = mutual_knn_matrix(b.knn, shuffled_lists(a.knn, order))
            for (i, first, second), maps in (((ia, a, b), (cka, cka_null_ab, knn, knn_null_ab)), ((ib, b, a), (cka.T, cka_null_ba, knn.T, knn_null_ba))):
                rows = pd.DataFrame(pair_rows(first, second, *maps, halves))
                out[i].append(complete_rows(rows, model=first.model, revision=first.revision, task=first.task, subset="all", split="all",
                                            n_layers=first.n_layers, run_id=first.run_id, protocol=first.protocol, site=first.site))
    return {i: pd.concat(frames, ignore_index=True) for i, frames in out.items()}


def write_across_models(output: Any, task: str) -> list[str]:
    """Rewrite ``task``'s across-model rows in every model folder under ``output`` from the sketches stored there (module
    docstring); a folder whose file was made from the same sketches is left as it is. Sketches of other texts or
    settings than the rest are left out, with a line on stderr. Returns the paths written."""
    store = ResultStore(output)
    groups: dict[tuple[str, str], list[LayerSketches]] = defaultdict(list)
    for sketch in load_sketches(output, task):
        groups[(sketch.protocol, sketch.site)].append(sketch)
    written = []
    for (protocol, site), found in groups.items():
        reference = max(found, key=lambda s: sum(s.comparable(o) is None for o in found))  # the texts and settings most share
        kept = [s for s in found if reference.comparable(s) is None]
        for s in found:
            if s not in kept:
                print(f"{s.model}: {task} left out of the comparison across models: {reference.comparable(s)}", file=sys.stderr)
        variant = variant_suffix(protocol, site)
        made_from = hash_value(sorted((s.model, s.revision or "", s.run_id) for s in kept))
        stale = [i for i, s in enumerate(kept) if store.stored_hash(s.model, s.revision, task, Part.ACROSS, variant) != made_from]
        if len(kept) < 2 or not stale:
            continue
        rows = across_rows(kept)
        for i in stale:
            written.append(str(store.write_task(rows[i], kept[i].model, kept[i].revision, task, made_from, Part.ACROSS, variant)))
    return written


def checkpoint_similarity(base: LayerSketches, candidate: LayerSketches) -> pd.DataFrame:
    """Each layer's similarity between two checkpoints of one model (a base and a fine-tune, a merge, a damaged copy),
    from their stored sketches: columns ``layer, cka, mutual_knn`` (the CKA of the two sketches of the layer, the mutual
    k-NN alignment of its two lists), one row per layer both read. 1 at every layer for an unchanged model.

    Raises:
        ValueError: the two were taken from other texts or with other settings (:meth:`LayerSketches.comparable`).
    """
    why = base.comparable(candidate)
    if why is not None:
        raise ValueError(f"{candidate.model}'s {candidate.task} sketches cannot be compared with {base.model}'s: {why}")
    shared = [layer for layer in base.layers if layer in candidate.layers]
    ia, ib = [base.layers.index(layer) for layer in shared], [candidate.layers.index(layer) for layer in shared]
    cka, _ = cka_of_sketches([base.grams[i] for i in ia], [candidate.grams[i] for i in ib])
    knn = [float(knn_agreements(base.knn[i], candidate.knn[j]).mean()) for i, j in zip(ia, ib)]
    return pd.DataFrame({"layer": shared, "cka": np.diag(cka), "mutual_knn": knn})
