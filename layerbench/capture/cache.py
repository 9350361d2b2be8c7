"""Content-addressed activation cache on disk.

One file per text under ``<cache>/activations/<k[:2]>/<k>.lbc``, where ``k``
is the sha256 of everything that determines its states: model weights
fingerprint, tokenizer fingerprint, max_length, dtype and the text itself.
The file holds every pooling of that one forward pass, float32
``[len(POOLINGS), L+1, D]`` in the order of ``POOLINGS``, so the pooling is
the last part of the key: asking for another pooling later is a hit, not a
second pass. A file is ``MAGIC + sha256(payload) + payload`` with the payload
in ``.npy`` format: a truncated or corrupt file fails the digest check and is
recomputed, never trusted. Writes are atomic.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from layerbench.storage import atomic_write_bytes

MAGIC = b"LBC1"
_HEADER = len(MAGIC) + 32


@dataclass(frozen=True)
class ActivationCache:
    """Pooled per-text activations keyed by content; ``root`` is the cache folder."""

    root: Path
    _made: set[Path] = field(default_factory=set, compare=False, repr=False)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.lbc"

    def get(self, key: str) -> np.ndarray | None:
        """The stored array, or None when missing, truncated or corrupt."""
        try:
            blob = self.path(key).read_bytes()
        except OSError:
            return None
        payload = blob[_HEADER:]
        if len(blob) < _HEADER or blob[:4] != MAGIC or hashlib.sha256(payload).digest() != blob[4:_HEADER]:
            return None
        return np.load(io.BytesIO(payload), allow_pickle=False)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
        payload = buffer.getvalue()
        path = self.path(key)
        if path.parent not in self._made:  # one mkdir per shard folder, not per file
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload, make_parent=False)


def key_prefix(model_fingerprint: str, tokenizer_fingerprint: str, max_length: int, dtype: str) -> bytes:
    """The part of every key shared by one capture call (hashed once, not per text)."""
    return hashlib.sha256(f"{model_fingerprint}|{tokenizer_fingerprint}|{max_length}|{dtype}".encode()).digest()


def text_key(prefix: bytes, text: str) -> str:
    """Cache key of one text's pooled states (all poolings)."""
    return hashlib.sha256(prefix + text.encode()).hexdigest()
