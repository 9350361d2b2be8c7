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
from layerbench.errors import UserError, data_source_errors
from layerbench.specs.schema import HubSource, UrlSource


def parse_table(raw: bytes, source: UrlSource) -> pd.DataFrame:
    """The records of a downloaded file as a flat table (nested JSON fields joined with dots), rows in file order."""
    if source.format in ("csv", "tsv"):
        return pd.read_csv(io.BytesIO(raw), sep="," if source.format == "csv" else "\t")
    if source.format == "parquet":
        return pd.read_parquet(io.BytesIO(raw))
    if source.format == "jsonl":
        return pd.json_normalize([json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()])
    if source.format == "json":
        data: Any = json.loads(raw.decode("utf-8"))
        for key in (source.record_path or "").split(".") if source.record_path else []:
            data = data[key]
        if isinstance(data, dict):  # records keyed by id (Xie et al.'s ProntoQA: {"example1": {...}, ...})
            data = list(data.values())
        return pd.json_normalize(data)
    # lines: "<label> <text>", as in the SST files of Jin et al.
    rows = [line.split(" ", 1) for line in raw.decode("utf-8").splitlines() if " " in line.strip()]
    return pd.DataFrame(rows, columns=["label", "text"])


def git_blob_id(raw: bytes) -> str:
    """The git object id of a file's bytes, as ``git ls-tree`` lists it: sha1 of ``b"blob <size>\\0" + raw``."""
    return hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()


def check_digests(raw: bytes, source: UrlSource) -> str:
    """The sha256 of ``raw``; raises :class:`UserError` when it or the git object id differs from what the spec pins."""
    digest = hashlib.sha256(raw).hexdigest()
    if source.sha256 and digest != source.sha256:
        raise UserError(f"{source.url} has sha256 {digest}, not the {source.sha256} the spec pins; the file changed upstream")
    if source.git_blob and git_blob_id(raw) != source.git_blob:
        raise UserError(f"{source.url} has git object id {git_blob_id(raw)}, not the {source.git_blob} the spec pins; the file changed upstream")
    return digest


def download(url: str, timeout: float = 60) -> bytes:
    """The bytes at ``url``; no network (or a refusal) is a :class:`UserError` saying the task needs it."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except OSError as exc:
        raise UserError(f"cannot download {url} ({exc}); this task needs the network") from exc


def dataset_from_bytes(raw: bytes, source: UrlSource) -> TextDataset:
    """A downloaded file's items: digests checked, parsed as ``source.format``, read through the table fields."""
    digest = check_digests(raw, source)
    try:
        frame = parse_table(raw, source)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot parse {source.url} as {source.format}: {exc}") from exc
    return table_dataset(frame, source, source.url, {"source": "url", "url": source.url, "sha256": digest, "licence": source.licence})


def load_url(source: UrlSource) -> TextDataset:
    """The records of ``source.url``, checked against the digests the spec pins."""
    return dataset_from_bytes(download(source.url), source)


def load_hub(source: HubSource) -> TextDataset:
    """One split of a Hub data set at the pinned revision (``datasets`` is installed with mteb)."""
    try:
        import datasets
    except ImportError:
        raise UserError("Hub data sets need the 'datasets' package: pip install datasets") from None
    try:
        table = datasets.load_dataset(source.path, source.name, split=source.split, revision=source.revision)
    except data_source_errors() as exc:  # offline, missing or gated data
        raise UserError(f"cannot load Hub data set {source.path}@{source.revision} ({str(exc).splitlines()[0]}); it needs the network") from exc
    provenance = {"source": "hub", "dataset": source.path, "name": source.name, "split": source.split, "revision": source.revision, "licence": source.licence}
    return table_dataset(table.to_pandas(), source, f"Hub data set {source.path}", provenance)
