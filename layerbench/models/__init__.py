"""Model registry, resolution (Hub, packaged copies, local folders, GGUF), loading and anatomy.

The registry imports no torch, so ``layerbench list models`` answers at once;
loading and anatomy are imported on first use (PEP 562).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from layerbench.models.registry import find_entry, registry_entries

_LAZY = {"Anatomy": "layerbench.models.anatomy", "get_anatomy": "layerbench.models.anatomy",
         "ModelHandle": "layerbench.models.loading", "load_model": "layerbench.models.loading"}
__all__ = ["Anatomy", "ModelHandle", "find_entry", "get_anatomy", "load_model", "registry_entries"]

if TYPE_CHECKING:
    from layerbench.models.anatomy import Anatomy, get_anatomy
    from layerbench.models.loading import ModelHandle, load_model


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'layerbench.models' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
