"""Content hashes: of files (memoised on disk by path, size and mtime) and of small values."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerbench.config import cache_dir
from layerbench.storage import atomic_write_bytes


def hash_value(value: Any) -> str:
    """sha256 hex digest of ``value`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def read_memo(name: str) -> dict[str, Any]:
    """The JSON memo ``name`` in the cache folder (``{}`` when absent or damaged: everything is computed again)."""
    try:
        return json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}


def write_memo(name: str, memo: dict[str, Any]) -> None:
    """Replace the JSON memo ``name`` in the cache folder, whole (a reader sees the old memo or the new)."""
    atomic_write_bytes(cache_dir() / name, json.dumps(memo, indent=0).encode())


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (:func:`concatenation_sha256` of one file)."""
    return concatenation_sha256([path])


def concatenation_sha256(paths: Sequence[str | Path]) -> str:
    """sha256 hex digest of the files' bytes concatenated in order, without writing the concatenation.

    A model shipped in chunks (several packages, one chunk each) is checked
    against the whole file's published digest this way. Reading a large
    checkpoint costs seconds, so digests are memoised in the cache folder under
    each file's (absolute path, size, mtime): a changed file is hashed again,
    an unchanged one is not.
    """
    resolved = [Path(p).resolve() for p in paths]
    key = " + ".join(f"{p}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in resolved)
    memo = read_memo("file-sha256.json")
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    for path in resolved:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    memo[key] = digest.hexdigest()
    write_memo("file-sha256.json", memo)
    return memo[key]


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def weights_fingerprint(folder: str | Path) -> str:
    """sha256 over the names and contents of every weights file in ``folder``."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return hash_value([[str(p.relative_to(folder)), file_sha256(p)] for p in files])


def folder_bytes(folder: str | Path) -> int:
    """Total size in bytes of the weights files in ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


