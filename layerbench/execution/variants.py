"""What a run does with one task: its variants (protocol, site, pooling) and the parts of each it runs now."""
from __future__ import annotations

from dataclasses import dataclass

from layerbench.results.manifest import Part
from layerbench.specs import TaskSpec
from layerbench.specs.protocols import variant_suffix


@dataclass(frozen=True)
class Variant:
    """One way a task runs: under a protocol (the spec with the protocol's settings), at a capture site, with a pooling.

    Attributes:
        protocol: the protocol's name (the rows' ``protocol``).
        spec: the task spec with the protocol's settings applied.
        site: the capture site (the rows' ``site``).
        pooling: ``mean``, ``last``, ``cls``, or ``model`` for the model's default.
    """

    protocol: str
    spec: TaskSpec
    site: str
    pooling: str

    @property
    def suffix(self) -> str:
        """The result files' suffix (:func:`layerbench.specs.protocols.variant_suffix`): empty for ours on the residual stream, else ``@<protocol>``, ``@normed``..."""
        return variant_suffix(self.protocol, self.site)

    @property
    def label(self) -> str:
        return f"{self.protocol} on {self.site}"

    def capture_pooling(self, model_default: str) -> str:
        """The pooling the capture uses: the variant's, or ``model_default`` (the checkpoint's registry default) for ``model``."""
        return model_default if self.pooling == "model" else self.pooling


@dataclass(frozen=True)
class WorkItem:
    """One variant of a task to run now, and which of its parts (its scores, its label-free metrics)."""

    variant: Variant
    parts: tuple[Part, ...]
