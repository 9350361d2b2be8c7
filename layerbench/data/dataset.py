"""The in-memory form every data source produces."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class TextDataset:
    """N texts, optional labels, and where they came from.

    Attributes:
        texts: the N input strings, in a fixed order.
        labels: N labels (class names or numbers), or None for unlabelled data.
        provenance: package and version, or file and checksum, and the licence
            as stated; copied into the run manifest.
        payload: what an evaluator needs beyond texts and labels (the mteb
            task object of an mteb source), or None.
        records: per-item fields beyond text and label, aligned with ``texts``
            (a two-hop query's entities and templates, a worked rationale), or None.
    """

    texts: list[str]
    labels: list[Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    payload: Any = None
    records: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subsample(self, limit: int | None, seed: int) -> "TextDataset":
        """At most ``limit`` items, in their original order: stratified by label when there are labels, else a seeded permutation's first."""
        if limit is None or limit >= len(self.texts):
            return self
        keep = stratified_indices(self.labels, limit, seed) if self.labels is not None else sample_indices(len(self.texts), limit, seed)
        labels = [self.labels[i] for i in keep] if self.labels is not None else None
        records = [self.records[i] for i in keep] if self.records is not None else None
        return TextDataset([self.texts[i] for i in keep], labels, {**self.provenance, "limit": limit, "subsample_seed": seed}, self.payload, records)


def sample_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted positions of at most ``limit`` of ``n`` items, chosen by a permutation seeded with ``seed`` (all n if fewer)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def stratified_indices(labels: list[Any], limit: int, seed: int) -> np.ndarray:
    """Sorted positions of ``limit`` items whose labels keep the classes' shares (largest remainders get the rest)."""
    labels_arr = np.asarray([str(v) for v in labels])
    classes, counts = np.unique(labels_arr, return_counts=True)
    share = counts * limit / len(labels_arr)
    take = np.floor(share).astype(int)
    for k in np.argsort(-(share - take))[: limit - int(take.sum())]:
        take[k] += 1
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels_arr == c))[:t] for c, t in zip(classes, take)]
    return np.sort(np.concatenate(keep))


def balanced(texts: Sequence[T], labels: Sequence[Any], n: int | None, seed: int) -> tuple[list[T], list[Any]]:
    """``n`` items (``texts``: texts or any items, such as indices) with an equal number per class (all of the rarest class if ``n`` is None), in a seeded order.

    Raises:
        ValueError: a class has fewer than ``n / k`` items.
    """
    labels_arr = np.asarray([str(v) for v in labels])
    classes = sorted(set(labels_arr))
    per_class = min(int((labels_arr == c).sum()) for c in classes) if n is None else n // len(classes)
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        members = np.flatnonzero(labels_arr == c)
        if len(members) < per_class:
            raise ValueError(f"class '{c}' has {len(members)} items, fewer than the {per_class} asked for")
        keep.append(rng.permutation(members)[:per_class])
    order = rng.permutation(np.concatenate(keep))
    return [texts[i] for i in order], [labels[i] for i in order]
