"""Row formats of the data files the consistency family's paper releases, read as the authors' code reads them.

- ``xie2024-boolq``, ``xie2024-coinflip``, ``xie2024-fewshot``: the files of
  zhxieml/internal-consistency ``data/`` as ``src/datasets/fewshot_dataset.py``
  turns them into samples: a context, a "True or false: ..." question, a
  True/False answer, and for ProntoQA and ProofWriter the item's own four
  in-context examples. An item's text is the query block of their prompt,
  ``"{context}\\nQ: {question}"``; its record keeps the parts and exemplars.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from layerbench.data.dataset import TextDataset
from layerbench.data.tables import ROW_FORMATS, require_columns


def query_block(context: str | None, question: str) -> str:
    """The query part of Xie et al.'s prompt (``format_icl``): ``"{context}\\nQ: {question}"``, or ``"Q: {question}"`` without a context."""
    return f"{context}\nQ: {question}" if context is not None else f"Q: {question}"


def _xie_items(items: list[dict[str, Any]], fmt: str) -> TextDataset:
    texts = [query_block(item["context"], item["question"]) for item in items]
    labels = ["True" if item.pop("answer") else "False" for item in items]
    return TextDataset(texts, labels, {"format": f"{fmt}, as zhxieml/internal-consistency src/datasets/fewshot_dataset.py reads it"}, records=items)


@ROW_FORMATS.register("xie2024-boolq")
def xie2024_boolq(frame: pd.DataFrame, where: str) -> TextDataset:
    """BoolQ rows ``question, answer, passage``: context = the passage, question = "True or false: " + the question capitalized + "?"."""
    require_columns(frame, ("question", "answer", "passage"), where, "BoolQ")
    items = []
    for row in frame.to_dict("records"):
        question = str(row["question"]).strip()
        items.append({"context": str(row["passage"]).strip(), "question": "True or false: " + question[:1].upper() + question[1:] + "?",
                      "answer": bool(row["answer"])})
    return _xie_items(items, "BoolQ")


COIN_QUESTION = "True or false: Is the coin still heads up?"


@ROW_FORMATS.register("xie2024-coinflip")
def xie2024_coinflip(frame: pd.DataFrame, where: str) -> TextDataset:
    """BIG-bench coin flip rows ``question, answer`` (yes/no): context = the question up to " Is the coin still heads up?"."""
    require_columns(frame, ("question", "answer"), where, "coin flip")
    items = [{"context": str(row["question"]).split(" Is the coin still heads up?")[0], "question": COIN_QUESTION, "answer": row["answer"] == "yes"}
             for row in frame.to_dict("records")]
    return _xie_items(items, "coin flip")


@ROW_FORMATS.register("xie2024-fewshot")
def xie2024_fewshot(frame: pd.DataFrame, where: str) -> TextDataset:
    """ProntoQA / ProofWriter items ``test_example.*`` with their ``in_context_example<k>.*``: question = context, query = question."""
    fields = ("question", "query", "chain_of_thought", "answer")
    require_columns(frame, tuple(f"test_example.{f}" for f in fields), where, "Xie et al. few-shot")
    shots = sorted({c.split(".")[0] for c in frame.columns if c.startswith("in_context_example")}, key=lambda c: int(c.removeprefix("in_context_example")))
    items = []
    for row in frame.to_dict("records"):
        exemplars = [
            {"context": row[f"{k}.question"], "question": row[f"{k}.query"], "rationale": " ".join(row[f"{k}.chain_of_thought"]),
             "answer": row[f"{k}.answer"] == "True"}
            for k in shots if isinstance(row.get(f"{k}.query"), str)
        ]
        items.append({"context": row["test_example.question"], "question": row["test_example.query"], "answer": row["test_example.answer"] == "True",
                      "exemplars": exemplars})
    return _xie_items(items, "ProntoQA/ProofWriter")
