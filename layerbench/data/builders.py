"""A named set of data builders: what a spec's ``dataset:``, ``generator:`` or ``task:`` field looks up.

Each data source (packaged files, seeded generators, offline mteb tasks) keeps
one :class:`Builders`; registering is a decorator, and building turns an
unknown name or a bad option into a one-line :class:`UserError` the same way
for all of them.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from layerbench.errors import UserError

T = TypeVar("T")


class Builders(Generic[T]):
    """Builders of one kind of data, by name.

    Args:
        kind: what a builder makes, as an error message names it (``packaged data set``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``fn`` under ``name``."""

        def register(fn: Callable[..., T]) -> Callable[..., T]:
            self._builders[name] = fn
            return fn

        return register

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._builders))

    def __len__(self) -> int:
        return len(self._builders)

    def names(self) -> str:
        """The registered names, comma-separated, for error messages."""
        return ", ".join(self)

    def build(self, name: str, options: dict[str, Any], **fixed: Any) -> T:
        """Call the builder ``name`` with the spec's ``options`` plus ``fixed`` arguments the harness sets.

        Raises:
            UserError: ``name`` is not registered, or ``options`` do not fit its signature.
        """
        if name not in self._builders:
            raise UserError(f"unknown {self.kind} '{name}'; known: {self.names()}")
        builder = self._builders[name]
        # Bind first, so that a TypeError raised inside a builder stays a bug and is not blamed on the spec.
        try:
            inspect.signature(builder).bind(**options, **fixed)
        except TypeError as exc:
            raise UserError(f"bad options {options} for {self.kind} '{name}': {exc}") from None
        return builder(**options, **fixed)
