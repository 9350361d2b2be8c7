"""Data sources: packaged files, local files. Each returns a TextDataset with provenance."""
from layerbench.data.dataset import TextDataset
from layerbench.data.local import load_local
from layerbench.data.packaged import PACKAGED, load_packaged, packaged_dataset

__all__ = ["PACKAGED", "TextDataset", "load_local", "load_packaged", "packaged_dataset"]
