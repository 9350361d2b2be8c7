"""Where files go and how they are written: a local path or an fsspec URL, written whole or not at all."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is an fsspec URL (``s3://...``, ``memory://...``) rather than a local path."""
    return "://" in str(location)


def as_location(location: str | Path) -> str | Path:
    """A URL as it is, a local path as an expanded ``Path``."""
    return str(location) if is_url(location) else Path(location).expanduser()


def write_whole(path: str | Path, data: bytes, fs: Any = None, make_parent: bool = True) -> None:
    """Write ``data`` so a reader sees the old content or the new, never half.

    A local ``Path`` goes through :func:`atomic_write_bytes`; a URL path on the
    fsspec file system ``fs`` is one ``pipe_file`` (an object store writes a
    whole object or none).
    """
    if isinstance(path, Path):
        atomic_write_bytes(path, data, make_parent=make_parent)
        return
    if make_parent:
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def atomic_write_bytes(path: str | Path, data: bytes, make_parent: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The rename is atomic on POSIX file systems, so an interrupted write leaves
    at most a stray ``.tmp`` file, never a truncated ``path``. ``make_parent``
    False skips creating the folder, for callers that write thousands of
    files into folders they know exist.
    """
    path = Path(path)
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once, at import: setting the umask to read it is not safe while other threads create files.
_FILE_MODE = 0o666 & ~_umask()


def file_mode() -> int:
    """The permissions a new file gets under the process's umask (``mkstemp`` alone gives 0600, which a cache shared by a group could not read)."""
    return _FILE_MODE
