"""Layer sketches: what a model's similarity run stores per layer so that later models and checkpoints are compared with
it without recapturing it.

One row per layer of one (model, task variant), stored beside the scores as
``<model>/sketches/<task><variant>.parquet`` (written whole and before the scores, with the scores' config hash, as
item records are; :mod:`layerbench.results.items`). Columns (:data:`SKETCH_COLUMNS`):

- identity: ``model, revision, task, protocol, site``, ``layer``, ``n_layers``, ``run_id``;
- ``texts``: a hash of the ordered texts the states were taken from (only sketches of the same texts are compared);
  ``n``: how many;
- ``k`` and ``knn``: each text's k nearest other texts by cosine, ``[N, k]`` int16 as bytes (row-major);
- ``rank``, ``gram_vectors`` (``[N, rank]`` float16 as bytes), ``gram_values`` (``[rank]`` float64 as bytes),
  ``gram_norm``, ``gram_residual``: the layer's centred Gram matrix as a
  :class:`~layerbench.metrics.similarity.GramSketch`; ``unbiased``: U-centred (True) or doubly centred;
- ``clamp_quantile``: how the states were clamped before either (NaN: not at all).

Size: 1,000 texts, k = 10, rank 128: 276 kB per layer (20 kB of lists, 256 kB of vectors).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from layerbench.errors import UserError
from layerbench.metrics.similarity import GramSketch

SKETCH_COLUMNS: dict[str, str] = {
    "model": "string", "revision": "string", "task": "string", "protocol": "string", "site": "string",
    "layer": "int64", "n_layers": "int64", "texts": "string", "n": "int64", "k": "int64", "knn": "object",
    "rank": "int64", "gram_vectors": "object", "gram_values": "object", "gram_norm": "float64", "gram_residual": "float64",
    "unbiased": "bool", "clamp_quantile": "float64", "run_id": "string",
}


def texts_id(texts: list[str]) -> str:
    """A hash of ``texts`` in their order (the first 16 hex digits of the sha256 of the texts joined by U+001E)."""
    return hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]


def sketch_frame(layers: list[int], knn: np.ndarray, grams: list[GramSketch], texts: str, unbiased: bool, clamp_quantile: float | None) -> pd.DataFrame:
    """The rows an evaluator returns (``Scored.sketches``): one per layer of ``layers`` from its k-NN lists ``knn``
    ``[K, N, k]`` and Gram sketches ``grams`` (K of them); the runner adds the identity (:func:`complete_sketches`)."""
    K, n, k = knn.shape
    if len(grams) != K or len(layers) != K:
        raise ValueError(f"{len(layers)} layers, {K} k-NN lists and {len(grams)} sketches: one of each per layer")
    if n > np.iinfo(np.int16).max:
        raise ValueError(f"k-NN lists are stored as int16: at most {np.iinfo(np.int16).max} texts, got {n}")
    return pd.DataFrame({
        "layer": layers, "texts": texts, "n": n, "k": k, "knn": [np.ascontiguousarray(lists, dtype=np.int16).tobytes() for lists in knn],
        "rank": [g.vectors.shape[1] for g in grams], "gram_vectors": [np.ascontiguousarray(g.vectors, dtype=np.float16).tobytes() for g in grams],
        "gram_values": [np.asarray(g.values, dtype=np.float64).tobytes() for g in grams], "gram_norm": [g.norm for g in grams],
        "gram_residual": [g.residual for g in grams], "unbiased": unbiased, "clamp_quantile": np.nan if clamp_quantile is None else clamp_quantile,
    })


def complete_sketches(frame: pd.DataFrame, *, model: str, revision: str | None, task: str, protocol: str, site: str, n_layers: int, run_id: str) -> pd.DataFrame:
    """An evaluator's sketch rows with the identifying columns added, in :data:`SKETCH_COLUMNS` order and dtypes."""
    frame = frame.assign(model=model, revision=revision, task=task, protocol=protocol, site=site, n_layers=n_layers, run_id=run_id)
    missing = [c for c in SKETCH_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"sketch rows lack columns {missing}")
    return frame[list(SKETCH_COLUMNS)].astype(SKETCH_COLUMNS).reset_index(drop=True)


@dataclass(frozen=True)
class LayerSketches:
    """One stored (model, task variant)'s sketches, decoded: every layer's k-NN lists and Gram sketch.

    Attributes:
        model, revision, task, protocol, site, run_id: whose they are.
        layers: the K layers read; ``n_layers``: the model's depth (for relative depth, ``layer / n_layers``).
        texts: the hash of the ordered texts (:func:`texts_id`).
        knn: ``[K, N, k]`` int, each text's k nearest other texts at each layer.
        grams: K :class:`~layerbench.metrics.similarity.GramSketch`.
        unbiased, clamp_quantile: how the Gram matrices were centred and the states clamped.
    """

    model: str
    revision: str | None
    task: str
    protocol: str
    site: str
    run_id: str
    layers: list[int]
    n_layers: int
    texts: str
    knn: np.ndarray
    grams: list[GramSketch]
    unbiased: bool
    clamp_quantile: float | None

    @property
    def depths(self) -> np.ndarray:
        """``[K]`` relative depth of each layer read."""
        return np.asarray(self.layers, dtype=np.float64) / self.n_layers

    def comparable(self, other: LayerSketches) -> str | None:
        """Why ``other``'s sketches cannot be compared with these (other texts, centring, clamp, k), or None if they can."""
        if other.texts != self.texts:
            return "they were taken from other texts"
        if other.unbiased != self.unbiased or other.clamp_quantile != self.clamp_quantile or other.knn.shape[2] != self.knn.shape[2]:
            return "they were made with other settings (centring, clamp or k)"
        return None


def decode_sketches(frame: pd.DataFrame) -> LayerSketches:
    """The :class:`LayerSketches` of one (model, task, protocol, site)'s rows (:data:`SKETCH_COLUMNS`), in layer order."""
    frame = frame.sort_values("layer")
    first = frame.iloc[0]
    n, k = int(first.n), int(first.k)
    knn = np.stack([np.frombuffer(b, dtype=np.int16).reshape(n, k).astype(np.intp) for b in frame.knn])
    grams = [GramSketch(np.frombuffer(v, dtype=np.float16).reshape(n, int(r)), np.frombuffer(values, dtype=np.float64), float(norm), float(residual))
             for v, r, values, norm, residual in zip(frame.gram_vectors, frame["rank"], frame.gram_values, frame.gram_norm, frame.gram_residual)]
    clamp = float(first.clamp_quantile)
    return LayerSketches(str(first.model), None if pd.isna(first.revision) else str(first.revision), str(first.task), str(first.protocol), str(first.site),
                         str(first.run_id), [int(layer) for layer in frame.layer], int(first.n_layers), str(first.texts), knn, grams, bool(first.unbiased),
                         None if np.isnan(clamp) else clamp)


def load_sketches(path: str | Path, task: str | None = None) -> list[LayerSketches]:
    """Every stored sketch under a results folder (all models, or one model's folder), one :class:`LayerSketches` per
    (model, revision, task, protocol, site), ordered by model; only ``task``'s when given. Empty when there are none.

    Raises:
        UserError: ``path`` does not exist; a sketch file is corrupt.
    """
    import pyarrow as pa

    from layerbench.results.manifest import Part
    from layerbench.results.store import _filesystem, part_files

    fs, root = _filesystem(path)
    if not fs.exists(root):
        raise UserError(f"no results at '{path}'")
    files = part_files(fs, root, Part.SKETCHES)
    found = []
    for file in files:
        name = file.rsplit("/", 1)[-1].removesuffix(".parquet")
        if task is not None and name.split("@")[0] != task:
            continue
        try:
            with fs.open(file, "rb") as handle:
                frame = pd.read_parquet(handle)
            missing = set(SKETCH_COLUMNS) - set(frame.columns)
            if missing or frame.empty:
                raise ValueError(f"lacks columns {sorted(missing)}" if missing else "no rows")
            found += [decode_sketches(group) for _, group in frame.groupby(["model", "task", "protocol", "site"], sort=True)]
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            raise UserError(f"corrupt sketch file '{file}' ({str(exc).splitlines()[0]}); delete it and re-run that task with --overwrite") from None
    return sorted(found, key=lambda s: (s.model, s.task, s.protocol, s.site))
