"""Content-addressed activation cache on disk.

One file per (text, pooling) under ``<cache>/activations/<k[:2]>/<k>.lbc``,
where ``k`` is the sha256 of everything that determines the pooled states:
model weights fingerprint, tokenizer fingerprint, max_length, dtype, pooling,
the text itself and the batch it was computed in (the digest of the batch's
token ids: a float32 forward pass gives a text last bits that depend on its
batch's padded width and size, so an entry read back equals a recomputation
of the same text list bit for bit). A file is ``MAGIC + sha256(payload) + payload`` with the
payload a float32 ``[L+1, D]`` array in ``.npy`` format (or, for a
per-prompt metric, a float64 ``[L+1]`` array keyed by the metric instead of the pooling): a truncated or
corrupt file fails the digest check and is recomputed, never trusted. Writes
are atomic. Entries stay float32 so that a hit equals a fresh computation
bit for bit.

Only the pooling asked for is stored: caching all three from the one pass
was tried and tripled the bytes written, which on an H100 took longer than
the forward pass itself (SmolLM2: 877 MB for 4,096 headlines).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from layerbench.storage import is_url, write_whole

MAGIC = b"LBC1"
_HEADER = len(MAGIC) + 32


@dataclass(frozen=True)
class ActivationCache:
    """Pooled per-text activations keyed by content; ``root`` is the cache folder, or an fsspec URL (``s3://...``).

    A URL root lets the workers of a distributed run share one cache on an
    object store: each entry is one object, written whole.
    """

    root: Path | str
    _made: set[Path] = field(default_factory=set, compare=False, repr=False)

    @cached_property
    def _remote(self) -> Any:
        """The fsspec file system of a URL root (resolved once), or None for a local folder."""
        if not is_url(self.root):
            return None
        import fsspec

        return fsspec.core.url_to_fs(str(self.root))[0]

    def path(self, key: str) -> Path | str:
        if self._remote is not None:
            return f"{str(self.root).rstrip('/')}/{key[:2]}/{key}.lbc"
        return Path(self.root) / key[:2] / f"{key}.lbc"

    def get(self, key: str) -> np.ndarray | None:
        """The stored array, or None when missing, truncated or corrupt."""
        remote = self._remote
        try:
            blob = remote.cat_file(self.path(key)) if remote is not None else Path(self.path(key)).read_bytes()
        except OSError:  # missing (FileNotFoundError), or unreadable
            return None
        payload = blob[_HEADER:]
        if len(blob) < _HEADER or blob[:4] != MAGIC or hashlib.sha256(payload).digest() != blob[4:_HEADER]:
            return None
        return np.load(io.BytesIO(payload), allow_pickle=False)

    def exists(self, key: str) -> bool:
        remote = self._remote
        return remote.isfile(self.path(key)) if remote is not None else Path(self.path(key)).is_file()

    def put(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under ``key``: float64 stays float64 (metric values), anything else becomes float32."""
        buffer = io.BytesIO()
        dtype = np.float64 if array.dtype == np.float64 else np.float32
        np.save(buffer, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)
        payload = buffer.getvalue()
        blob = MAGIC + hashlib.sha256(payload).digest() + payload
        path = self.path(key)
        if isinstance(path, Path) and path.parent not in self._made:  # one mkdir per shard folder, not per file
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        write_whole(path, blob, self._remote, make_parent=False)


def key_prefix(model_fingerprint: str, tokenizer_fingerprint: str, max_length: int, dtype: str) -> bytes:
    """The part of every key shared by one capture call (hashed once, not per text)."""
    return hashlib.sha256(f"{model_fingerprint}|{tokenizer_fingerprint}|{max_length}|{dtype}".encode()).digest()


def text_key(prefix: bytes, kind: str, text: str, batch: bytes) -> str:
    """Cache key of one text's entry of one ``kind`` (a pooling, or a per-prompt metric's tag) computed in the batch of digest ``batch``."""
    return hashlib.sha256(prefix + kind.encode() + b"\0" + batch + text.encode()).hexdigest()
