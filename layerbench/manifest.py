"""What a run manifest records about the software and machine, besides the config."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = ("layerbench", "torch", "transformers", "tokenizers", "sentence-transformers", "numpy", "pandas", "pyarrow", "scikit-learn", "mteb", "gguf", "accelerate")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the numbers (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha() -> str | None:
    """Commit of the layerbench checkout (with ``-dirty`` for uncommitted changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def reproducibility() -> dict[str, Any]:
    """What decides whether a rerun gives the same bits, and whether it can.

    On a CPU a rerun on the same machine with the same code, data, seed,
    ``--batch-size`` and thread count gives the same rows bit for bit
    (batches are a function of the text list, and the activation cache is
    keyed by batch). A different thread count or batch size moves a state's
    last float32 bits (about 1e-6 of its scale). CUDA kernels (atomics in
    reductions, autotuned matmuls) are not bit-reproducible run to run.
    """
    import torch

    gpu = torch.cuda.is_available()
    return {
        "threads": torch.get_num_threads(),
        "bitwise": not gpu,
        "why_not": "CUDA kernels are not bit-reproducible run to run; compare within noise" if gpu else None,
    }


def environment() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_sha": git_sha(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "reproducibility": reproducibility(),
    }
