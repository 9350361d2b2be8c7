"""Data sets from the user's own files: JSON lines, CSV or parquet."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.data.tables import table_dataset
from layerbench.errors import UserError
from layerbench.fingerprint import file_sha256
from layerbench.specs.schema import LocalSource

_READERS = {".jsonl": lambda p: pd.read_json(p, lines=True), ".csv": pd.read_csv, ".parquet": pd.read_parquet}


def load_local(source: LocalSource) -> TextDataset:
    """Rows of the user's file ``source.path``, read as the source's table fields say (:func:`table_dataset`)."""
    path = Path(source.path).expanduser()
    reader = _READERS.get(path.suffix)
    if reader is None:
        raise UserError(f"cannot read '{path}': use a .jsonl, .csv or .parquet file")
    if not path.is_file():
        raise UserError(f"data file '{path}' does not exist")
    try:
        frame = reader(path)
    except Exception as exc:  # pandas raises many types for a malformed file
        raise UserError(f"cannot parse data file '{path}': {str(exc).splitlines()[0]}") from None
    return table_dataset(frame, source, f"data file '{path}'", {"source": "local", "path": str(path.resolve()), "sha256": file_sha256(path)})
