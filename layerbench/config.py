"""Process-wide settings read from the environment: cache location and progress bars."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of layerbench's on-disk cache (activations, converted models, fingerprints).

    ``$LAYERBENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/layerbench``, else
    ``~/.cache/layerbench``.
    """
    if "LAYERBENCH_CACHE" in os.environ:
        return Path(os.environ["LAYERBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "layerbench"


def progress_disabled() -> bool:
    """True when progress bars are off (``--quiet`` sets ``TQDM_DISABLE=1``)."""
    return os.environ.get("TQDM_DISABLE", "").lower() in {"1", "true", "yes"}
