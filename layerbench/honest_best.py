"""The selection-honest best layer: chosen on half of the items, scored on the other half.

A task's naive best layer is the maximum over L layers of noisy scores, measured on the items that chose it; the
maximum of noisy estimates is biased upward (the winner's curse), most where many layers score alike. Cross-fitting
removes the bias: split the items at random into halves A and B, pick the layer on A and score it on B, then the other
way; average over many random halvings. The estimate is unbiased for the true score of the layers it picks, and
slightly pessimistic for the true best layer's (it picks with half the items). The naive maximum lies above the truth
and this estimate at or below it, so a researcher should read both: :func:`layerbench.summary` gives both.

Pure functions on arrays (:func:`honest_best`), the rows of one task's item records (:func:`honest_rows`), and the
derived result part (:data:`~layerbench.results.manifest.Part.HONEST`, ``<model>/honest/<task><variant>.parquet``)
that :func:`write_honest_best` keeps in step with the item records after every run:

- ``honest_best``: the cross-fitted score of the picked layer, with its standard error;
- ``honest_gain``: on the same held-out halves, the picked layer's score minus the last layer's (signed so that
  positive is better), with its standard error;
- ``honest_best_layer``, ``honest_best_depth``: the layer picked most often over the 2 x halvings picks, and the note
  says in what share of them.

Standard errors: the spread over :data:`layerbench.paired.STDERR_RESAMPLES` bootstrap resamples of the items, each
halved once at random and cross-fitted (so the spread holds the item noise and the halving's); the point estimate
averages :data:`HALVINGS` halvings, so the standard error is slightly conservative for it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from layerbench import paired
from layerbench.fingerprint import hash_value
from layerbench.results.items import item_arrays, read_item_file
from layerbench.results.manifest import Part
from layerbench.results.rows import summary_row
from layerbench.results.schema import complete_rows
from layerbench.results.store import ResultStore, _filesystem, part_files, part_folder, stored_hash_of
from layerbench.specs.protocols import variant_suffix

HALVINGS = 50  # random halvings behind a point estimate (each used both ways: 100 picks)
# Bumped when the rows' method changes, so that write_honest_best recomputes files made by an older one.
METHOD_VERSION = 1
METRICS = ("honest_best", "honest_gain", "honest_best_layer", "honest_best_depth")


@dataclass(frozen=True)
class HonestBest:
    """One score curve's cross-fitted best (:func:`honest_best`).

    Attributes:
        value: the mean over halvings and both directions of the held-out score of the layer picked on the other half.
        stderr: its standard error (module docstring).
        gain: on the same held-out halves, the picked layer's score minus the last layer's, signed (positive is better).
        gain_stderr: its standard error.
        layer: the layer picked most often (the first such in ``layers`` order on a tie).
        layer_share: the share of the 2 x halvings picks that chose ``layer``.
        picks: how many picks (2 x halvings).
    """

    value: float
    stderr: float
    gain: float
    gain_stderr: float
    layer: int
    layer_share: float
    picks: int


def halving_masks(n: int, halvings: int, seed: int = 0) -> np.ndarray:
    """``[H, N]`` 0/1 masks: row h marks the ``n // 2`` items of half A of the h-th random halving (seeded)."""
    rng = np.random.default_rng([seed, n, halvings, 0x4A1F])
    masks = np.zeros((halvings, n), dtype=np.float64)
    for row in masks:
        row[rng.choice(n, size=n // 2, replace=False)] = 1.0
    return masks


def cross_fit(statistic: str, values: np.ndarray, target: np.ndarray | None, higher: bool, masks: np.ndarray,
              counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick on one half, score on the other, both ways, for every halving.

    Args:
        statistic: how a score is computed from items (:data:`layerbench.results.items.STATISTICS`).
        values: ``[L, N]`` per-item values of L layers in layer order, the last layer last (``[L, S, N]`` for
            ``max_average_precision``).
        target: ``[N]`` gold scores or labels (None for ``mean``).
        higher: whether a higher score is better.
        masks: ``[H, N]`` 0/1, half A of each halving (:func:`halving_masks`).
        counts: ``[H, N]`` copies of each item (a bootstrap resample per halving); default one each.

    Returns:
        ``(score, gain, picks)``: ``[H]`` the mean of the two held-out scores, ``[H]`` the mean of the two held-out
        gains over the last layer (signed), ``[H, 2]`` the index of the layer picked on A and on B.
    """
    counts = np.ones_like(masks) if counts is None else counts
    sign = 1.0 if higher else -1.0
    on_a = paired.weighted_statistic(statistic, values, target, counts * masks)  # [H, L]
    on_b = paired.weighted_statistic(statistic, values, target, counts * (1.0 - masks))
    # A layer whose score is undefined on a half (a constant curve's correlation) cannot be picked there.
    pick_a = np.nanargmax(np.where(np.isnan(on_a), -np.inf, sign * on_a), axis=1)
    pick_b = np.nanargmax(np.where(np.isnan(on_b), -np.inf, sign * on_b), axis=1)
    rows = np.arange(len(masks))
    held_a, held_b = on_b[rows, pick_a], on_a[rows, pick_b]  # each pick scored on the half that did not make it
    score = (held_a + held_b) / 2.0
    gain = sign * ((held_a - on_b[:, -1]) + (held_b - on_a[:, -1])) / 2.0
    return score, gain, np.stack([pick_a, pick_b], axis=1)


def honest_best(statistic: str, values: np.ndarray, target: np.ndarray | None, higher: bool, layers: list[int],
                halvings: int = HALVINGS, resamples: int = paired.STDERR_RESAMPLES, seed: int = 0) -> HonestBest:
    """The cross-fitted best of one score curve (module docstring), from its per-item values.

    Args:
        statistic: as :func:`cross_fit`.
        values: ``[L, N]`` per-item values (``[L, S, N]`` for ``max_average_precision``), the layers in ``layers`` order, ascending.
        target: as :func:`cross_fit`.
        higher: as :func:`cross_fit`.
        layers: the L layer numbers.
        halvings: random halvings the estimate averages.
        resamples: bootstrap resamples behind the standard errors (0: none, NaN).
        seed: seeds the halvings and the resamples.
    """
    n = np.asarray(values).shape[-1]
    score, gain, picks = cross_fit(statistic, values, target, higher, halving_masks(n, halvings, seed))
    chosen = np.bincount(picks.ravel(), minlength=len(layers))
    stderr = gain_stderr = float("nan")
    if resamples > 1:
        counts = paired.bootstrap_weights(n, resamples, seed)
        spread, gain_spread, _ = cross_fit(statistic, values, target, higher, halving_masks(n, resamples, seed + 1), counts)
        stderr, gain_stderr = float(np.nanstd(spread, ddof=1)), float(np.nanstd(gain_spread, ddof=1))
    return HonestBest(value=float(np.nanmean(score)), stderr=stderr, gain=float(np.nanmean(gain)), gain_stderr=gain_stderr,
                      layer=int(layers[int(chosen.argmax())]), layer_share=float(chosen.max() / picks.size), picks=int(picks.size))


def honest_rows(items: pd.DataFrame, scores: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The ``honest_*`` summary rows (module docstring) of one task variant's item records, completed as result rows.

    Args:
        items: one task variant's item records (:func:`layerbench.load_items`), one metric.
        scores: the same variant's score rows: they give each layer's depth and the metric's direction.

    Returns:
        Rows per (subset, split) of the records; none for a group whose metric has no direction in ``scores``, or
        where some layer lacks some item (the picks would not be comparable).
    """
    out = []
    for (metric, statistic, subset, split), group in items.groupby(["metric", "statistic", "subset", "split"], sort=True):
        curve = scores[(scores.metric == metric) & (scores.subset == subset) & (scores.split == split) & scores.layer.notna()]
        if curve.empty or curve.higher_is_better.isna().all():
            continue
        higher = bool(curve.higher_is_better.dropna().iloc[0])
        arrays = item_arrays(group)
        if arrays is None or len(arrays[1]) < 4:
            continue
        layers, units, values, target = arrays
        best = honest_best(str(statistic), values, target, higher, layers, seed=seed)
        n_layers = int(curve.n_layers.iloc[0])
        note = (f"the {metric} layer chosen on a random half of the {len(units)} items and scored on the other half, both ways, "
                f"{best.picks // 2} halvings; layer {best.layer} picked in {best.layer_share:.0%} of them")
        rows = pd.DataFrame([
            summary_row("honest_best", best.value, stderr=best.stderr, n=len(units), higher_is_better=higher, note=note),
            summary_row("honest_gain", best.gain, stderr=best.gain_stderr, n=len(units), higher_is_better=True, note=note),
            summary_row("honest_best_layer", best.layer, n=len(units), higher_is_better=None, note=note),
            summary_row("honest_best_depth", best.layer / n_layers, n=len(units), higher_is_better=None, note=note),
        ])
        first = group.iloc[0]
        out.append(complete_rows(rows, model=str(first.model), revision=None if pd.isna(first.revision) else str(first.revision), task=str(first.task),
                                 subset=str(subset), split=str(split), n_layers=n_layers, run_id=str(first.run_id),
                                 protocol=str(first.protocol), site=str(first.site)))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def write_honest_best(output: Any, check_only: bool = False) -> list[str]:
    """Bring every ``honest`` file under ``output`` (a results folder: one folder per model) in step with the item records beside it: written where the records
    are new or changed (each file carries a hash of its records' config hash and :data:`METHOD_VERSION`), removed where
    the records are gone. Returns the paths written (``check_only``: the paths that are out of step; nothing is written)."""
    store = ResultStore(output)
    fs, root = _filesystem(output)
    if not fs.exists(root):
        return []
    written = []
    for file in part_files(fs, root, Part.ITEMS):
        # Whether the derived file is in step is read from the two files' metadata: an unchanged folder reads no records
        # (this runs after every `layerbench run`).
        derived = _beside(file, Part.HONEST)
        made_from = hash_value([stored_hash_of(fs, file), METHOD_VERSION])
        if stored_hash_of(fs, derived) == made_from:
            continue
        if check_only:
            written.append(derived)
            continue
        items = read_item_file(fs, file)
        scores_path = _beside(file, Part.SCORES)
        if items.empty or not fs.isfile(scores_path):
            continue
        with fs.open(scores_path, "rb") as handle:
            rows = honest_rows(items, pd.read_parquet(handle))
        if rows.empty:
            continue
        first = items.iloc[0]
        model, revision = str(first.model), None if pd.isna(first.revision) else str(first.revision)
        variant = variant_suffix(str(first.protocol), str(first.site))
        written.append(str(store.write_task(rows, model, revision, str(first.task), made_from, Part.HONEST, variant)))
    for derived in part_files(fs, root, Part.HONEST):
        if not fs.isfile(_beside(derived, Part.ITEMS)):
            if check_only:
                written.append(derived)
                continue
            print(f"{derived}: its item records are gone; removed", file=sys.stderr)
            fs.rm_file(derived)
    return written


def _beside(file: str, part: Part) -> str:
    """The file of another part of the same task variant as ``file`` (``<model>/<folder>/<task><variant>.parquet``, or the
    scores' ``<model>/<task><variant>.parquet``), for ``file`` of a part kept in its own folder."""
    model_folder, name = file.rsplit("/", 2)[0], file.rsplit("/", 1)[1]
    folder = part_folder(part)
    return f"{model_folder}/{name}" if folder is None else f"{model_folder}/{folder}/{name}"


def converging_layers_by_fold(correct: np.ndarray, fold: np.ndarray, layers: list[int], epsilon: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """A probe's converging layer on each fold's held-out curve (Jin et al.'s concept depth: the first layer whose accuracy
    reaches the peak's less ``epsilon``), with the peak chosen two ways.

    Args:
        correct: ``[L, N]`` 1/0 held-out correctness of each item at each layer. fold: ``[N]`` the fold that held each item out.
        layers: the L layer numbers. epsilon: how far below the peak a layer counts as converged.

    Returns:
        ``(naive, cross_fitted)``, each ``[K]`` per fold: the peak read off the fold's own curve (what the probe family reports,
        :func:`layerbench.evaluators.probe.concept_depth`: the threshold carries the curve's winner's curse, so it lies
        late), and the peak layer chosen on the other folds' items and read on this fold's (a threshold without that bias;
        the first crossing of a noisy curve then lies early).
    """
    correct = np.asarray(correct, dtype=np.float64)
    naive, cross_fitted = [], []
    for k in np.unique(fold):
        own, others = correct[:, fold == k].mean(axis=1), correct[:, fold != k].mean(axis=1)
        naive.append(layers[int(np.flatnonzero(own >= own.max() - epsilon)[0])])
        cross_fitted.append(layers[int(np.flatnonzero(own >= own[int(others.argmax())] - epsilon)[0])])
    return np.array(naive, dtype=float), np.array(cross_fitted, dtype=float)
