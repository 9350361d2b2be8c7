"""The results folder: the single source of truth for everything downstream.

Layout::

    <output>/<model slug>/<task>.parquet          the evaluator's scores of one task
    <output>/<model slug>/metrics/<task>.parquet  the label-free metrics on that task's data
    <output>/<model slug>/items/<task>.parquet    per-item records of the task's scores (:mod:`layerbench.results.items`)
    <output>/<model slug>/sketches/<task>.parquet per-layer sketches of a similarity task (:mod:`layerbench.results.sketches`)
    <output>/<model slug>/across/<task>.parquet   a similarity task's rows against every other model (:mod:`layerbench.across_models`)
    <output>/<model slug>/runs/<run_id>.json      the manifest of each run

A task run under another protocol or capture site than the default
(``layerbench`` on the ``residual`` site) gets a variant suffix:
``<task>@<protocol>.parquet``, ``<task>@normed.parquet``, so one folder holds
every protocol and site of a task, each resumed on its own.

Scores and metrics are separate parts, each with its own config hash, so a
run that adds metrics (or changes ``--metrics``) leaves the scores alone.

``<output>`` is a local (or network-mounted) folder, or an fsspec URL
(``s3://bucket/results``, ``gs://...``, ``file:///...``): every worker of a
distributed run can then write to the same place. A local file is written to
a temporary name and renamed, and an object store writes a whole object or
none, so a crash leaves the previous file or the new one. A task's parquet carries the hash of the config
that made it; a re-run with the same config skips the task, one with another
config refuses to overwrite it without ``--overwrite``.
"""
from __future__ import annotations

import io
import os
import re
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from layerbench.errors import UserError
from layerbench.results.manifest import COMPANIONS, Manifest, Part, parse_manifest
from layerbench.results.schema import OPTIONAL, check_columns, conform
from layerbench.storage import write_whole

_HASH_KEY = b"layerbench.config_hash"
# Where each part's files lie under a model's folder; item records go with the scores they were computed for.
_FOLDERS: dict[str, str | None] = {Part.SCORES.value: None, Part.METRICS.value: "metrics", Part.ITEMS.value: "items", Part.SKETCHES.value: "sketches",
                                  Part.ACROSS.value: "across", Part.HONEST.value: "honest"}


def model_slug(model: str, revision: str | None) -> str:
    """A folder name for a model: ``org/name`` -> ``org__name``, plus ``@revision`` if pinned."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.replace("/", "__"))
    return f"{slug}@{re.sub(r'[^A-Za-z0-9._-]+', '_', revision)}" if revision else slug


def _filesystem(root: str | Path) -> tuple[Any, str]:
    """The fsspec file system of ``root`` and the path on it (a plain path is the local file system)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(str(root))
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package (s3fs, gcsfs) missing
        raise UserError(f"cannot open results location '{root}': {exc}") from None
    return fs, path.rstrip("/")


def part_folder(part: Part) -> str | None:
    """The folder under a model's results that holds ``part``'s files (None: the model's folder itself, for the scores)."""
    return _FOLDERS[Part(part).value]


def part_files(fs: Any, root: str, part: Part) -> list[str]:
    """The files of one part kept in its own folder (``items``, ``sketches``, ``across``, ``honest``) under ``root``: a results folder
    (``<model>/<folder>/*.parquet``) or one model's folder (``<folder>/*.parquet``)."""
    folder = part_folder(part)
    return sorted(fs.glob(f"{root}/*/{folder}/*.parquet")) + sorted(fs.glob(f"{root}/{folder}/*.parquet"))


def stored_hash_of(fs: Any, path: str) -> str | None:
    """The config hash a result file at ``path`` on ``fs`` was written with (its parquet schema's metadata, the rows
    unread); None where there is no such file or it is unreadable (a corrupt file is as good as none: it is made again)."""
    try:
        if not fs.isfile(path):
            return None
        with fs.open(path, "rb") as handle:
            meta = pq.read_schema(handle).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    return meta.get(_HASH_KEY, b"").decode() or None


def _is_local(fs: Any) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


class ResultStore:
    """Reads and writes one results location (a folder, or an fsspec URL)."""

    def __init__(self, root: str | Path):
        self.fs, self.path = _filesystem(root)
        self.root = Path(self.path) if _is_local(self.fs) else None  # a local folder, for callers that want a Path

    def _join(self, *parts: str) -> str | Path:
        """A location under the root: a ``Path`` on the local file system, a URL path string elsewhere."""
        joined = "/".join([self.path, *parts])
        return Path(joined) if self.root is not None else self.fs.unstrip_protocol(joined)

    def task_path(self, model: str, revision: str | None, task: str, part: str = Part.SCORES, variant: str = "") -> str | Path:
        """Where one part (:class:`Part`: ``scores``, ``metrics``, or the scores' ``items``) of one task's rows lives; ``variant`` is the
        suffix of a non-default protocol or site (``@<protocol>``)."""
        key = Part(part).value if part in _FOLDERS else part
        if key not in _FOLDERS:
            raise ValueError(f"unknown result part '{part}'; use one of {', '.join(_FOLDERS)}")
        slug, folder = model_slug(model, revision), _FOLDERS[key]
        name = f"{task}{variant}.parquet"
        return self._join(slug, name) if folder is None else self._join(slug, folder, name)

    def stored_hash(self, model: str, revision: str | None, task: str, part: str = Part.SCORES, variant: str = "") -> str | None:
        """Config hash of a finished task part, or None when it has not run (or its file is unreadable)."""
        return stored_hash_of(self.fs, str(self.task_path(model, revision, task, part, variant)))

    def stored_run_ids(self, model: str, revision: str | None, task: str, part: str = Part.SCORES, variant: str = "") -> set[str]:
        """The run ids in a stored task part's rows (empty when it has not run, or its file is unreadable)."""
        path = self.task_path(model, revision, task, part, variant)
        try:
            with self.fs.open(str(path), "rb") as handle:
                return set(pq.read_table(handle, columns=["run_id"]).column("run_id").to_pylist())
        except (OSError, pa.ArrowException, KeyError):
            return set()

    def write_task(self, rows: pd.DataFrame, model: str, revision: str | None, task: str, config_hash: str, part: str = Part.SCORES,
                   variant: str = "") -> str | Path:
        """Write one task part's rows atomically, tagged with the config hash that made them (``items``: rows already conformed to the item schema)."""
        table = pa.Table.from_pandas(rows if part in COMPANIONS else conform(rows), preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _HASH_KEY: config_hash.encode()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        path = self.task_path(model, revision, task, part, variant)
        write_whole(path, buffer.getvalue(), self.fs)
        return path

    def remove_task(self, model: str, revision: str | None, task: str, part: str, variant: str = "") -> None:
        """Remove one task part's file, if there is one."""
        path = str(self.task_path(model, revision, task, part, variant))
        if self.fs.exists(path):
            self.fs.rm_file(path)

    def manifest_path(self, model: str, revision: str | None, run_id: str) -> str | Path:
        return self._join(model_slug(model, revision), "runs", f"{run_id}.json")

    def read_manifest(self, model: str, revision: str | None, run_id: str) -> Manifest | None:
        """The manifest of run ``run_id`` for this model, or None if it has none (or it is unreadable: it is rewritten)."""
        path = self.manifest_path(model, revision, run_id)
        try:
            return parse_manifest(self.fs.cat_file(str(path)), path)
        except (OSError, UserError):
            return None

    def write_manifest(self, manifest: Manifest) -> str | Path:
        """Write ``manifest`` whole, to its model's ``runs/<run_id>.json``."""
        path = self.manifest_path(manifest.model.name, manifest.model.revision, manifest.run_id)
        write_whole(path, manifest.to_json(), self.fs)
        return path

    def mark_interrupted(self) -> list[str]:
        """Mark ``interrupted`` every manifest still ``running`` whose process is gone (a killed run); return their paths.

        A manifest names the host and process id that wrote it. One written on
        this host by a process that no longer exists can never finish; one
        from another host (a shared results folder) cannot be checked and is left.
        """
        marked = []
        for path in sorted(self.fs.glob(f"{self.path}/*/runs/*.json")):
            try:
                manifest = parse_manifest(self.fs.cat_file(path), path)
            except (OSError, UserError):
                continue
            process = manifest.process
            if manifest.status != "running" or process.host != socket.gethostname() or _alive(process.pid):
                continue
            marked_manifest = manifest.model_copy(update={"status": "interrupted", "interrupted_noticed_at": datetime.now(timezone.utc).isoformat()})
            write_whole(path if self.root is None else Path(path), marked_manifest.to_json(), self.fs)
            marked.append(str(path))
        return marked


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` exists on this host (an unknown pid counts as alive: nothing is marked on a guess)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def load_results(path: str | Path) -> pd.DataFrame:
    """Every result row under ``path`` as one tidy DataFrame.

    Args:
        path: a results folder (all models), one model's folder, or one ``.parquet`` file; a path or an fsspec URL.

    Returns:
        Columns ``model, revision, task, protocol, site, subset, split, metric,
        layer, source_layer, other_model, n_layers, depth, value, stderr, n, higher_is_better,
        run_id, note``, one row per (model, revision, task, protocol, site, subset,
        split, metric, layer, source_layer, other_model).

    Raises:
        UserError: ``path`` does not exist, holds no results, or a file is corrupt.
    """
    fs, root = _filesystem(path)
    if not fs.exists(root):
        raise UserError(f"no results at '{path}'")
    companions = tuple(f"/{_FOLDERS[part.value]}/" for part in COMPANIONS)  # not result rows
    files = [root] if fs.isfile(root) else sorted(f for f in fs.glob(f"{root}/**/*.parquet") if not any(c in f[len(root):] for c in companions))
    if not files:
        raise UserError(f"no result files (*.parquet) under '{path}'; run `layerbench run` first")
    frames = []
    for file in files:
        try:
            with fs.open(file, "rb") as handle:
                frame = pd.read_parquet(handle)
            check_columns(frame)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise UserError(f"corrupt result file '{file}' ({str(exc).splitlines()[0]}); delete it and re-run that task") from None
        frames.append(frame)
    # One conform of all rows (a per-file conform costs more than the reading); a column that older files lack
    # is null in their rows after the concat and filled with its default (schema.OPTIONAL).
    rows = pd.concat(frames, ignore_index=True)
    return conform(rows.fillna({c: v for c, v in OPTIONAL.items() if c in rows and v is not pd.NA}))


def read_manifests(paths: list[Path]) -> dict[str, list[Manifest]]:
    """Run manifests under local result folders, by model name, oldest first.

    Raises:
        UserError: a manifest is not valid JSON or not a manifest.
    """
    runs: dict[str, list[Manifest]] = {}
    for path in paths:
        for file in sorted(path.rglob("runs/*.json")) if path.is_dir() else []:
            try:
                text = file.read_text()
            except OSError as exc:
                raise UserError(f"unreadable run manifest '{file}' ({exc})") from None
            manifest = parse_manifest(text, file)
            runs.setdefault(manifest.model.name, []).append(manifest)
    for model_runs in runs.values():
        model_runs.sort(key=lambda m: m.run_id)
    return runs


REFERENCE_MARKER = ".layerbench-reference"


def check_reference(output: str | Path, allowed: bool) -> None:
    """Refuse to write into a reference results folder (one holding :data:`REFERENCE_MARKER`) unless ``allowed``.

    The committed ``results/`` is what the leaderboard and the gate read as the
    reference; a run by hand that wrote into it (the old default output) would
    silently change the reference or be refused for another config.

    Raises:
        UserError: ``output`` is a reference folder and ``allowed`` is false.
    """
    import fsspec

    location = str(output).rstrip("/")
    fs, root = fsspec.core.url_to_fs(location)
    if not allowed and fs.exists(f"{root}/{REFERENCE_MARKER}"):
        raise UserError(f"'{output}' is a reference results folder (it holds {REFERENCE_MARKER}); write your runs elsewhere with --output DIR, "
                        "or pass --reference to update the reference on purpose (make leaderboard does)")
