"""Tidy result rows, the atomic parquet store, run manifests and loading."""
from layerbench.results.schema import COLUMNS, KEY, complete_rows
from layerbench.results.store import ResultStore, load_results, model_slug

__all__ = ["COLUMNS", "KEY", "ResultStore", "complete_rows", "load_results", "model_slug"]
