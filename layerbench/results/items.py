"""Per-item records: what each gated score was computed from, item by item, so that two runs align on their items.

A score row (``accuracy`` at layer 12) is one number; its item records are
the numbers it was made of, one per item and layer, keyed by a stable item id
(:func:`item_ids`: a hash of the item's text or texts). Two runs on the same
items can then be compared item by item (:mod:`layerbench.paired`), and a
researcher can read which items a layer gets wrong.

Columns (:data:`ITEM_COLUMNS`):

- identity: ``model, revision, task, protocol, site, subset, split`` (as the score rows), ``layer``;
- ``metric``: the score row these items make (``accuracy``, mteb's ``main_score``);
- ``statistic``: how that score is computed from the items (:data:`STATISTICS`):
  ``mean`` (of ``value``), ``spearman`` / ``pearson`` (of ``value`` against ``target``),
  ``max_average_precision`` (the best over ``scorer`` of the average precision of ``value`` for the labels ``target``);
- ``item``: the item id; ``scorer``: which similarity made ``value`` when a score takes the best of several (else null);
- ``value``: what the statistic reads: 1/0 correct (a probe's held-out
  prediction), a pair's similarity (STS, pair classification; distances
  negated, so higher is more similar), a query's score (retrieval), the share
  of classifier experiments that got an item right (classification);
- ``target``: the gold label or score; ``prediction``: the predicted class (probe, classification);
- ``probability``: the probability the probe gave the item's true class (held out); ``fold``: the split that held it out;
- ``run_id``.

Stored beside the scores as ``<model>/items/<task><variant>.parquet``, written
whole and before the scores file, with the scores' config hash; a run that
resumes rewrites them with the scores. Scores without items (clustering, a
summary over the layers) have no records, and a comparison of them stays unpaired.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerbench.errors import UserError

ITEM_COLUMNS: dict[str, str] = {
    "model": "string", "revision": "string", "task": "string", "protocol": "string", "site": "string", "subset": "string", "split": "string",
    "metric": "string", "statistic": "string", "layer": "Int64", "item": "string", "scorer": "string",
    "value": "float64", "target": "float64", "prediction": "float64", "probability": "float64", "fold": "Int64", "run_id": "string",
}
# Filled where an evaluator leaves a column out.
_ITEM_DEFAULTS = {"scorer": pd.NA, "target": float("nan"), "prediction": float("nan"), "probability": float("nan"), "fold": pd.NA}
STATISTICS = ("mean", "spearman", "pearson", "max_average_precision")
ITEMS_FOLDER = "items"


@dataclass(frozen=True)
class Scored:
    """What an evaluator returns when it keeps item records: its score rows and the items they were computed from.

    ``rows`` are the evaluator's rows as before (``metric, layer, value, ...``);
    ``items`` has the columns of :data:`ITEM_COLUMNS` other than the identity
    that :func:`complete_items` adds (``subset`` and ``split`` may be left to it too).
    An evaluator may still return bare rows: its scores are then compared unpaired. ``notes``: what the run manifest
    should say of the variant (the prompts a filter dropped, by reason), copied into its record. ``sketches``: per-layer
    summaries kept for later comparisons (:func:`layerbench.results.sketches.sketch_frame`), stored beside the scores.
    """

    rows: pd.DataFrame
    items: pd.DataFrame | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    sketches: pd.DataFrame | None = None


def as_scored(result: Scored | pd.DataFrame) -> Scored:
    """An evaluator's result as :class:`Scored`: bare rows get no items and no notes."""
    return result if isinstance(result, Scored) else Scored(result)


def item_ids(*texts: Sequence[str]) -> list[str]:
    """A stable id per item: the first 16 hex digits of the sha256 of its text (or its texts joined by U+001F, for a pair).

    Args:
        texts: one or more sequences of N strings (one per part of an item: a sentence pair is two).

    Returns:
        N ids; an item whose texts occur again in the same list gets ``#2``, ``#3``... so that ids stay unique.
    """
    ids = [hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16] for parts in zip(*texts)]
    seen: Counter[str] = Counter()
    unique = []
    for item in ids:
        seen[item] += 1
        unique.append(item if seen[item] == 1 else f"{item}#{seen[item]}")
    return unique


def conform_items(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with exactly :data:`ITEM_COLUMNS`, in order, with their dtypes (optional columns filled)."""
    frame = frame.assign(**{c: fill for c, fill in _ITEM_DEFAULTS.items() if c not in frame})
    missing = [c for c in ITEM_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"item records lack columns {missing}")
    unknown = set(frame.statistic.dropna()) - set(STATISTICS)
    if unknown:
        raise ValueError(f"unknown item statistic(s) {sorted(unknown)}; use one of {', '.join(STATISTICS)}")
    return frame[list(ITEM_COLUMNS)].astype(ITEM_COLUMNS).reset_index(drop=True)


def complete_items(items: pd.DataFrame, *, model: str, revision: str | None, task: str, subset: str, split: str, run_id: str,
                   protocol: str = "layerbench", site: str = "residual") -> pd.DataFrame:
    """An evaluator's item records with the identifying columns added (``subset``/``split`` kept where the evaluator set them)."""
    frame = items.copy()
    frame["model"], frame["revision"], frame["task"], frame["protocol"], frame["site"], frame["run_id"] = model, revision, task, protocol, site, run_id
    frame["subset"] = frame["subset"] if "subset" in frame else subset
    frame["split"] = frame["split"] if "split" in frame else split
    return conform_items(frame)


def load_items(path: str | Path, missing_ok: bool = False) -> pd.DataFrame:
    """Every item record under a results folder as one tidy DataFrame (:data:`ITEM_COLUMNS`).

    Args:
        path: a results folder (all models) or one model's folder; a path or an fsspec URL.
        missing_ok: return an empty frame when the folder holds no item records (runs made before
            item records existed), instead of raising.

    Raises:
        UserError: ``path`` does not exist; it holds no item records (unless ``missing_ok``); an item file is corrupt.
    """
    from layerbench.results.manifest import Part
    from layerbench.results.store import _filesystem, part_files

    fs, root = _filesystem(path)
    if not fs.exists(root):
        raise UserError(f"no results at '{path}'")
    files = part_files(fs, root, Part.ITEMS)
    if not files:
        if missing_ok:
            return conform_items(pd.DataFrame(columns=list(ITEM_COLUMNS)))
        raise UserError(f"no item records under '{path}' (<model>/{ITEMS_FOLDER}/*.parquet); runs made before item records existed have none: "
                        "re-run the tasks with --overwrite")
    return pd.concat([read_item_file(fs, file) for file in files], ignore_index=True)


def read_item_file(fs: Any, file: str) -> pd.DataFrame:
    """One task variant's item records from ``file`` on the fsspec file system ``fs``, conformed to :data:`ITEM_COLUMNS`.

    Raises:
        UserError: the file is corrupt (the message says to delete it and re-run the task).
    """
    import pyarrow as pa

    try:
        with fs.open(file, "rb") as handle:
            return conform_items(pd.read_parquet(handle))
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise UserError(f"corrupt item file '{file}' ({str(exc).splitlines()[0]}); delete it and re-run that task with --overwrite") from None


def item_units(items: pd.DataFrame) -> pd.Series:
    """The unit each item record is resampled by: its item, or (item, fold) where an item is held out in several splits."""
    fold = items.fold.astype("string").fillna("") if "fold" in items else pd.Series("", index=items.index)
    return items.item.astype(str) + np.where(fold == "", "", "@" + fold)


def item_matrix(items: pd.DataFrame, layers: list[int], units: list[str]) -> np.ndarray:
    """``[L, N]`` values (``[L, S, N]`` with S scorers) of the records, in the order of ``layers`` and ``units`` (NaN where one is missing)."""
    frame = items.assign(unit=item_units(items), scorer=items.scorer.fillna("") if "scorer" in items else "")
    scorers = sorted(frame.scorer.unique())
    table = frame.set_index(["layer", "scorer", "unit"]).value
    index = pd.MultiIndex.from_product([layers, scorers, units], names=["layer", "scorer", "unit"])
    values = table.reindex(index).to_numpy(np.float64).reshape(len(layers), len(scorers), len(units))
    return values if len(scorers) > 1 else values[:, 0, :]


def item_targets(items: pd.DataFrame, layer: int, units: list[str]) -> np.ndarray | None:
    """``[N]`` the gold label or score of each of ``units`` as the records of ``layer`` give it (NaN where one is
    missing); None where the records carry no target (a mean of per-item values reads none)."""
    if "target" not in items:
        return None
    first = items[items.layer == layer].assign(unit=item_units).drop_duplicates("unit").set_index("unit")
    return first.target.reindex(units).to_numpy(np.float64)


def item_arrays(items: pd.DataFrame) -> tuple[list[int], list[str], np.ndarray, np.ndarray | None] | None:
    """One score's records (one metric, statistic, subset and split) as arrays: ``(layers, units, values, target)``, the
    layers ascending, the units (:func:`item_units`) sorted, ``values`` ``[L, N]`` (``[L, S, N]`` with S scorers,
    :func:`item_matrix`) and ``target`` ``[N]`` as the first layer's records give it (:func:`item_targets`); None where
    some layer lacks some item (the layers' scores would rest on different items)."""
    layers = sorted(int(layer) for layer in items.layer.dropna().unique())
    units = sorted(set(item_units(items)))
    values = item_matrix(items, layers, units)
    if np.isnan(values).any():
        return None
    return layers, units, values, item_targets(items, layers[0], units)


def item_stderr(items: pd.DataFrame, seed: int = 0) -> dict[int, float]:
    """Each layer's standard error of the score its item records make (one metric, subset and split): the standard
    deviation of the score over :data:`layerbench.paired.STDERR_RESAMPLES` resamples of the items with replacement, each recomputed by
    its statistic (:func:`layerbench.paired.weighted_statistic`: a mean, a rank correlation, a best average precision).
    Returns ``{layer: stderr}``; empty when the records are not one score's, or some layer lacks some item."""
    from layerbench import paired

    if items.empty or items.statistic.nunique() != 1 or items.metric.nunique() != 1:
        return {}
    arrays = item_arrays(items)
    if arrays is None:
        return {}
    layers, units, values, target = arrays
    weights = paired.bootstrap_weights(len(units), paired.STDERR_RESAMPLES, seed)
    scores = paired.weighted_statistic(str(items.statistic.iloc[0]), values, target, weights)  # [B, L]
    return {layer: float(np.nanstd(scores[:, i], ddof=1)) for i, layer in enumerate(layers)}
