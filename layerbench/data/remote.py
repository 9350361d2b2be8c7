"""Data sets that need the network: a pinned public file (URL) or a Hugging Face Hub data set at a pinned revision."""
from __future__ import annotations

import hashlib
import io
import json
import urllib.request
from typing import Any

import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.data.tables import table_dataset
from layerbench.errors import UserError
from layerbench.specs.schema import HubSource, UrlSource


def parse_table(raw: bytes, source: UrlSource) -> pd.DataFrame:
    """The records of a downloaded file as a flat table (nested JSON fields joined with dots)."""
    if source.format in ("csv", "tsv"):
        return pd.read_csv(io.BytesIO(raw), sep="," if source.format == "csv" else "\t")
    if source.format == "jsonl":
        return pd.json_normalize([json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()])
    if source.format == "json":
        data: Any = json.loads(raw.decode("utf-8"))
        for key in (source.record_path or "").split(".") if source.record_path else []:
            data = data[key]
        return pd.json_normalize(data)
    # lines: "<label> <text>", as in the SST files of Jin et al.
    rows = [line.split(" ", 1) for line in raw.decode("utf-8").splitlines() if " " in line.strip()]
    return pd.DataFrame(rows, columns=["label", "text"])


def load_url(source: UrlSource) -> TextDataset:
    """The records of ``source.url``, checked against its ``sha256`` when the spec gives one."""
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response:  # noqa: S310 (the spec pins an https URL)
            raw = response.read()
    except OSError as exc:
        raise UserError(f"cannot download {source.url} ({exc}); this task needs the network") from None
    digest = hashlib.sha256(raw).hexdigest()
    if source.sha256 and digest != source.sha256:
        raise UserError(f"{source.url} has sha256 {digest}, not the {source.sha256} the spec pins; the file changed upstream")
    try:
        frame = parse_table(raw, source)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot parse {source.url} as {source.format}: {exc}") from None
    return table_dataset(frame, source, source.url, {"source": "url", "url": source.url, "sha256": digest, "licence": source.licence})


def load_hub(source: HubSource) -> TextDataset:
    """One split of a Hub data set at the pinned revision (``datasets`` is installed with mteb)."""
    try:
        import datasets
    except ImportError:
        raise UserError("Hub data sets need the 'datasets' package: pip install datasets") from None
    try:
        table = datasets.load_dataset(source.path, source.name, split=source.split, revision=source.revision)
    except Exception as exc:  # datasets raises many types for offline, missing or gated data
        raise UserError(f"cannot load Hub data set {source.path}@{source.revision} ({str(exc).splitlines()[0]}); it needs the network") from None
    provenance = {"source": "hub", "dataset": source.path, "name": source.name, "split": source.split, "revision": source.revision, "licence": source.licence}
    return table_dataset(table.to_pandas(), source, f"Hub data set {source.path}", provenance)
