"""The ``label-free`` family: tasks whose rows are the label-free metric suite's alone."""
from __future__ import annotations

from layerbench.families.registry import Family, ProtocolSettings, register


class LabelFreeSettings(ProtocolSettings):
    """The ``label-free`` family has no knobs: its rows are the metric suite's (and ours the only protocol)."""


FAMILY = register(Family(
    name="label-free",
    description="no evaluator: the label-free metrics (entropy, rank, geometry, views) on the task's texts",
    settings=LabelFreeSettings,
    reads="nothing",
))
