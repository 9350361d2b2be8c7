"""Process-wide settings read from the environment: cache location and progress bars."""
from __future__ import annotations

import os
from pathlib import Path

from layerbench.storage import as_location


def shipped_folder(name: str) -> Path:
    """A top-level folder of the project that ships inside the package: ``tasks`` or ``leaderboard``.

    In a source checkout (and an editable install) it is the repository's own
    ``tasks/`` or ``leaderboard/``; a wheel carries it as ``layerbench/tasks``
    or ``layerbench/leaderboard`` (``package-dir`` in pyproject.toml), so a
    wheel installed elsewhere lists every task and builds the same site.
    """
    here = Path(__file__).resolve().parent
    inside = here / name
    return inside if inside.is_dir() else here.parent / name


def cache_dir() -> Path:
    """Root of layerbench's on-disk cache (activations, converted models, fingerprints).

    ``$LAYERBENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/layerbench``, else
    ``~/.cache/layerbench``.
    """
    if "LAYERBENCH_CACHE" in os.environ:
        return Path(os.environ["LAYERBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "layerbench"


def wheel_dir() -> Path:
    """Where downloaded carrier wheels are read from (never installed): ``$LAYERBENCH_WHEELS`` if set, else
    ``<cache_dir>/wheels``. A model whose pieces are the versions of one package (EmbeddingGemma's) is read from them."""
    if "LAYERBENCH_WHEELS" in os.environ:
        return Path(os.environ["LAYERBENCH_WHEELS"]).expanduser()
    return cache_dir() / "wheels"


def activation_cache_location() -> Path | str:
    """Where pooled activations are cached: ``$LAYERBENCH_ACTIVATION_CACHE`` (a folder or an fsspec URL
    such as ``s3://bucket/activations``, shared by the workers of a distributed run), else ``<cache_dir>/activations``."""
    location = os.environ.get("LAYERBENCH_ACTIVATION_CACHE", "").strip()
    if not location:
        return cache_dir() / "activations"
    return as_location(location)


def memory_budget() -> int:
    """Bytes the pooled states of one capture may take in memory before they spill to disk in float16.

    ``$LAYERBENCH_MEMORY_BUDGET`` in bytes (suffixes K, M, G allowed) if set, else half the physical memory.
    """
    raw = os.environ.get("LAYERBENCH_MEMORY_BUDGET", "").strip()
    if raw:
        return parse_bytes(raw, "LAYERBENCH_MEMORY_BUDGET")
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def parse_bytes(raw: str, what: str) -> int:
    """``raw`` bytes, with an optional suffix K, M, G or T (powers of 1024): ``8G`` -> 8589934592.

    Raises:
        UserError: not such a number (``what`` names the setting in the message).
    """
    text = raw.strip().upper().removesuffix("B")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:], 1)
    try:
        value = int(float(text.rstrip("KMGT")) * scale)
    except ValueError:
        value = -1
    if value < 0:
        from layerbench.errors import UserError

        raise UserError(f"{what} must be a number of bytes such as 8G, got '{raw}'")
    return value


def progress_disabled() -> bool:
    """True when progress bars are off (``--quiet`` sets ``TQDM_DISABLE=1``)."""
    return os.environ.get("TQDM_DISABLE", "").lower() in {"1", "true", "yes"}
