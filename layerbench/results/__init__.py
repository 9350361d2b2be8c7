"""Tidy result rows, the atomic parquet store, run manifests and loading."""
from layerbench.results.items import Scored, load_items
from layerbench.results.manifest import Manifest, Part
from layerbench.results.schema import COLUMNS, KEY, complete_rows
from layerbench.results.sketches import LayerSketches, load_sketches
from layerbench.results.store import REFERENCE_MARKER, ResultStore, check_reference, load_results, model_slug, read_manifests

__all__ = ["COLUMNS", "KEY", "REFERENCE_MARKER", "LayerSketches", "Manifest", "Part", "ResultStore", "Scored", "check_reference", "complete_rows", "load_items",
           "load_results", "load_sketches", "model_slug", "read_manifests"]
