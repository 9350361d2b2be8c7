"""The in-memory form every data source produces."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TextDataset:
    """N texts, optional labels, and where they came from.

    Attributes:
        texts: the N input strings, in a fixed order.
        labels: N labels (class names or numbers), or None for unlabelled data.
        provenance: package and version, or file and checksum, and the licence
            as stated; copied into the run manifest.
    """

    texts: list[str]
    labels: list[Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subsample(self, limit: int | None, seed: int) -> "TextDataset":
        """At most ``limit`` items, chosen by a permutation seeded with ``seed``, in their original order."""
        if limit is None or limit >= len(self.texts):
            return self
        keep = sample_indices(len(self.texts), limit, seed)
        labels = [self.labels[i] for i in keep] if self.labels is not None else None
        return TextDataset([self.texts[i] for i in keep], labels, {**self.provenance, "limit": limit, "subsample_seed": seed})


def sample_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted positions of at most ``limit`` of ``n`` items, chosen by a permutation seeded with ``seed`` (all n if fewer)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])
