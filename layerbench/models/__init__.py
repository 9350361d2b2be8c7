"""Model registry, resolution (Hub, packaged copies, local folders, GGUF), loading and anatomy."""
from layerbench.models.anatomy import Anatomy, get_anatomy
from layerbench.models.loading import ModelHandle, load_model
from layerbench.models.registry import find_entry, registry_entries

__all__ = ["Anatomy", "ModelHandle", "find_entry", "get_anatomy", "load_model", "registry_entries"]
