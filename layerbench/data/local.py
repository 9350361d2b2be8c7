"""Data sets from the user's own files: JSON lines, CSV or parquet."""
from __future__ import annotations

from pathlib import Path

from layerbench.data.dataset import TextDataset
from layerbench.data.tables import table_dataset
from layerbench.errors import UserError
from layerbench.fingerprint import file_sha256
from layerbench.specs.schema import LocalSource

SUFFIXES = (".jsonl", ".csv", ".parquet")


def load_local(source: LocalSource) -> TextDataset:
    """Rows of the user's file ``source.path``, read as the source's table fields say (:func:`table_dataset`)."""
    path = Path(source.path).expanduser()
    if path.suffix not in SUFFIXES:
        raise UserError(f"cannot read '{path}': use a .jsonl, .csv or .parquet file")
    if not path.is_file():
        raise UserError(f"data file '{path}' does not exist")
    import pandas as pd  # here, not at import: `layerbench list tasks` reads no user file

    try:
        frame = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except (ValueError, OSError) as exc:  # a malformed file: pandas' parser errors and pyarrow's ArrowInvalid are ValueErrors, a bad parquet footer an OSError
        raise UserError(f"cannot parse data file '{path}': {str(exc).splitlines()[0]}") from exc
    return table_dataset(frame, source, f"data file '{path}'", {"source": "local", "path": str(path.resolve()), "sha256": file_sha256(path)})
