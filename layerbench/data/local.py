"""Data sets from the user's own files: JSON lines, CSV or parquet."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.fingerprint import file_sha256

_READERS = {".jsonl": lambda p: pd.read_json(p, lines=True), ".csv": pd.read_csv, ".parquet": pd.read_parquet}


def load_local(path: str | Path, text_field: str = "text", label_field: str | None = None) -> TextDataset:
    """Rows of a local file; ``text_field`` holds the input text, ``label_field`` the optional label."""
    path = Path(path).expanduser()
    reader = _READERS.get(path.suffix)
    if reader is None:
        raise UserError(f"cannot read '{path}': use a .jsonl, .csv or .parquet file")
    if not path.is_file():
        raise UserError(f"data file '{path}' does not exist")
    try:
        frame = reader(path)
    except Exception as exc:  # pandas raises many types for a malformed file
        raise UserError(f"cannot parse data file '{path}': {str(exc).splitlines()[0]}") from None
    for column in filter(None, [text_field, label_field]):
        if column not in frame.columns:
            raise UserError(f"data file '{path}' has no column '{column}'; its columns: {', '.join(map(str, frame.columns))}")
    labels = frame[label_field].tolist() if label_field else None
    return TextDataset(frame[text_field].astype(str).tolist(), labels, {"source": "local", "path": str(path.resolve()), "sha256": file_sha256(path)})
