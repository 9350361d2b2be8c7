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



def network_errors() -> tuple[type[BaseException], ...]:
    """What a request raises when the network cannot be used: offline mode, no route, DNS, a refused connection, a timeout.

    ``ConnectionError`` (huggingface_hub's ``OfflineModeIsEnabled`` is one),
    ``TimeoutError`` and the HTTP client's transport errors. A permission or
    disk error (another ``OSError``) is not among them.
    """
    errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    try:
        import httpx2  # huggingface_hub 2.x's HTTP client

        errors += (httpx2.TransportError,)
    except ImportError:
        pass
    return errors


def data_source_errors() -> tuple[type[BaseException], ...]:
    """What reading a Hub or mteb data set raises when the data cannot be had or read, and nothing else.

    :func:`network_errors`, OS-level errors (a missing or unreadable cached
    file), a data set, revision or split that does not exist or fails its
    checks (``datasets``' own errors, huggingface_hub's HTTP errors), and
    malformed data (``ValueError``, ``KeyError``). A bug in our code
    (``TypeError``, ``AttributeError``...) is not among them and keeps its traceback.
    """
    errors: tuple[type[BaseException], ...] = (*network_errors(), OSError, ValueError, KeyError)
    try:
        from datasets.exceptions import DatasetsError

        errors += (DatasetsError,)
    except ImportError:
        pass
    try:
        from huggingface_hub.errors import HfHubHTTPError

        errors += (HfHubHTTPError,)
    except ImportError:
        pass
    return errors
