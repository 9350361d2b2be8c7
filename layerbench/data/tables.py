"""Rows of a table (a user's file, a downloaded file, a Hub split) as a task's items.

One function for every tabular source, so that ``text_field`` templates,
``label_map`` and ``record_fields`` mean the same wherever the table came
from. A named ``row_format`` reads rows as structured records instead (a
two-hop query per row); formats register in :data:`ROW_FORMATS`.
"""
from __future__ import annotations

import string
from typing import Any

import pandas as pd

from layerbench.data.builders import Builders
from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError

# Builders ``(frame, where) -> TextDataset``: the whole table read as records of one format.
ROW_FORMATS: Builders[TextDataset] = Builders("row format")


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], where: str, fmt: str) -> None:
    """A row format's check that ``frame`` has ``columns``: else a :class:`UserError` naming what it lacks and what it has."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{where}: not the {fmt} format, it lacks {', '.join(missing)}; its fields: {', '.join(map(str, frame.columns))}")


def _template_fields(text_field: str) -> list[str]:
    """The columns a ``text_field`` names: itself, or the ``{column}`` slots of a template."""
    if "{" not in text_field:
        return [text_field]
    return [name for _, name, _, _ in string.Formatter().parse(text_field) if name]


def table_dataset(frame: pd.DataFrame, fields: Any, where: str, provenance: dict[str, Any]) -> TextDataset:
    """The items of ``frame`` as ``fields`` (a source with the fields of ``_TableFields``) describe them.

    Args:
        frame: the table, one row per item.
        fields: ``text_field``, ``label_field``, ``label_map``, ``record_fields``, ``row_format``.
        where: the table's name for error messages (a path, a URL, a Hub data set).
        provenance: where the table came from; kept on the dataset.

    Raises:
        UserError: a named column is missing, a template is malformed, or the row format is unknown or rejects a row.
    """
    if fields.row_format is not None:
        data = ROW_FORMATS.build(fields.row_format, {}, frame=frame, where=where)
        return TextDataset(data.texts, data.labels, {**provenance, **data.provenance, "row_format": fields.row_format}, records=data.records)
    try:
        text_columns = _template_fields(fields.text_field)
    except ValueError as exc:
        raise UserError(f"{where}: text_field {fields.text_field!r} is not a valid template: {exc}") from None
    for column in [*text_columns, *filter(None, [fields.label_field]), *fields.record_fields]:
        if column not in frame.columns:
            raise UserError(f"{where} has no field '{column}'; its fields: {', '.join(map(str, frame.columns))}")
    frame = frame.dropna(subset=text_columns)
    if fields.label_field and fields.label_map:
        # Labels compare as text: a YAML key "true" must match a boolean column's True.
        mapping = {str(k).lower(): v for k, v in fields.label_map.items()}
        mapped = [mapping.get(str(v).lower(), v) for v in frame[fields.label_field]]
        frame = frame.assign(**{fields.label_field: mapped})
        frame = frame[frame[fields.label_field].notna()]
    if fields.per_label_limit is not None:
        if not fields.label_field:
            raise UserError(f"{where}: per_label_limit needs a label_field")
        frame = frame.groupby(fields.label_field, sort=False).head(fields.per_label_limit)  # the first N of each label, file order kept
    if "{" in fields.text_field:
        texts = [fields.text_field.format(**row) for row in frame[text_columns].astype(str).to_dict("records")]
    else:
        texts = frame[fields.text_field].astype(str).tolist()
    labels = frame[fields.label_field].tolist() if fields.label_field else None
    records = frame[fields.record_fields].to_dict("records") if fields.record_fields else None
    return TextDataset(texts, labels, provenance, records=records)
