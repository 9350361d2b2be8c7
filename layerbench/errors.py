"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (an unknown model, a bad
option value, a malformed spec, a corrupt results file). The CLI prints its
message as one line and exits with code 2; library callers catch it like any
other exception. Everything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A bad input, reported as one line naming the bad value and the fix."""

    exit_code = 2
