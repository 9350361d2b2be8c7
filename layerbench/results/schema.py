"""The tidy result row: one per (model, revision, task, protocol, site, subset, split, metric, layer, source_layer, other_model)."""
from __future__ import annotations

import pandas as pd

# Column -> pandas dtype. Nullable types keep "unknown" (a descriptive metric's
# higher_is_better, a missing revision) distinct from a value.
COLUMNS: dict[str, str] = {
    "model": "string",
    "revision": "string",
    "task": "string",
    # How the task was measured (layerbench's default, or a paper's released code: the protocols of each family's
    # record, layerbench.families) and what a layer's vector is (residual, normed, mlp-input).
    "protocol": "string",
    "site": "string",
    "subset": "string",
    "split": "string",
    "metric": "string",
    # The layer a row reads (0 = the embedding output); <NA> for a summary of all layers (a concept depth, an AUROC).
    "layer": "Int64",
    # Interventions only: the layer a patched state was taken from (``layer`` is
    # where it was written); <NA> for every row that reads a single layer.
    "source_layer": "Int64",
    # Similarity across models only: the model whose layer ``source_layer`` is (``layer`` is this model's); <NA> elsewhere.
    "other_model": "string",
    "n_layers": "int64",
    "depth": "float64",
    "value": "float64",
    "stderr": "float64",
    "n": "int64",
    "higher_is_better": "boolean",
    "run_id": "string",
    # Why a row's value is missing or how to read it (a concept depth not reported: "not decodable beyond
    # the baseline ..."); null for most rows.
    "note": "string",
}

KEY = ["model", "revision", "task", "protocol", "site", "subset", "split", "metric", "layer", "source_layer", "other_model"]
# Columns an evaluator may leave out (and files written before they existed lack), with what fills them.
OPTIONAL = {"source_layer": pd.NA, "other_model": pd.NA, "protocol": "layerbench", "site": "residual", "note": pd.NA}


def complete_rows(
    scores: pd.DataFrame,
    *,
    model: str,
    revision: str | None,
    task: str,
    subset: str,
    split: str,
    n_layers: int,
    run_id: str,
    protocol: str = "layerbench",
    site: str = "residual",
) -> pd.DataFrame:
    """An evaluator's ``metric, layer, value, stderr, n, higher_is_better`` rows made tidy.

    Adds the identifying columns and ``depth = layer / n_layers`` (0 for the
    embedding output, 1 for the last block; NaN for summary rows, whose
    ``layer`` is null), and fixes the column order and dtypes.
    """
    frame = scores.copy()
    frame["model"] = model
    frame["revision"] = revision
    frame["task"] = task
    frame["protocol"] = protocol
    frame["site"] = site
    frame["subset"] = frame["subset"] if "subset" in frame else subset
    frame["split"] = frame["split"] if "split" in frame else split
    frame["n_layers"] = n_layers
    frame["layer"] = pd.array(frame["layer"], dtype="Int64")
    frame["depth"] = (frame["layer"] / n_layers).astype("float64")  # NaN for summary rows
    frame["run_id"] = run_id
    return conform(frame)


def check_columns(frame: pd.DataFrame) -> None:
    """Raise ValueError when ``frame`` lacks a column of the schema that is not optional."""
    missing = [c for c in COLUMNS if c not in frame and c not in OPTIONAL]
    if missing:
        raise ValueError(f"result rows lack columns {missing}")


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with exactly the schema's columns, in order, with its dtypes (optional columns filled: :data:`OPTIONAL`)."""
    frame = frame.assign(**{c: fill for c, fill in OPTIONAL.items() if c not in frame})
    if "layer" in frame:  # files written before summary rows had a null layer marked them -1
        layer = frame["layer"].astype("Int64")
        frame["layer"] = layer.mask(layer == -1)
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"result rows lack columns {missing}")
    return frame[list(COLUMNS)].astype(COLUMNS).reset_index(drop=True)
