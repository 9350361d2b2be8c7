"""Row formats of the data files the probe family's paper releases, read as the authors' code reads them.

- ``jin2024-strategyqa``: BIG-bench StrategyQA as Luckfort/CD ``dataset.py``
  (``StrategyQA()``) builds its inputs: the question, a space, and the
  explanation without its leading "Yes." / "No.".
"""
from __future__ import annotations

import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.data.tables import ROW_FORMATS, require_columns


@ROW_FORMATS.register("jin2024-strategyqa")
def jin2024_strategyqa(frame: pd.DataFrame, where: str) -> TextDataset:
    """StrategyQA (``examples`` of BIG-bench's task.json): text = input + " " + explanation; label 1 (Yes) or 0 (No); rows with neither are dropped."""
    require_columns(frame, ("input", "target", "target_scores.Yes", "target_scores.No"), where, "BIG-bench StrategyQA")
    texts, labels = [], []
    for row in frame.to_dict("records"):
        if row["target_scores.Yes"] == 1:
            label = 1
        elif row["target_scores.No"] == 1:
            label = 0
        else:
            continue
        explanation = str(row["target"])
        for answer in ("Yes.", "No."):
            if explanation.startswith(answer):
                explanation = explanation[len(answer):].strip()
                break
        texts.append(f"{row['input']} {explanation}")
        labels.append(label)
    return TextDataset(texts, labels, {"format": "BIG-bench StrategyQA, as Luckfort/CD dataset.py reads it"})
