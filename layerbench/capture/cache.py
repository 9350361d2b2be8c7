"""The packed, content-addressed activation cache.

An entry is one text's pooled states of one capture (float32 ``[K, D]``) or
one per-prompt metric's values (float64 ``[K]``), keyed by the sha256 of
everything that determines it (:func:`key_prefix`, :func:`text_key`): model
weights and tokenizer fingerprints, max_length, dtype, pooling (or metric),
the layers kept, the text, and the batch it was computed in (a float32
forward pass gives a text last bits that depend on its batch, so an entry
read back equals a recomputation of the same text list bit for bit).

Entries are packed, not one file each (which capped writes near 2,000
entries a second and left a file per text). Under the root, a folder or an
fsspec URL::

    shards/<id>.lbs       entries back to back, each its raw array bytes
    index/<id>.parquet    one row per entry of shard <id>: key, offset, nbytes,
                          dtype, shape, sha256 of the bytes, model, written_at

A :class:`ShardWriter` appends a capture's entries to a temporary file and,
when it is closed (or holds ``SHARD_BYTES``, or ``SHARD_SECONDS`` have
passed), renames the shard into place and then writes its index: a reader
sees a whole shard with its index, or neither. Each writer has its own ids
(time first, so sorted names are oldest first), so processes writing at
once never touch the same file. Every entry read is checked against its
sha256: a truncated or corrupt shard yields no entry and the capture
recomputes its batch (and writes it again: the newest copy of a key is read
first). The index files are read once per process and then only the new
ones (:class:`_Index`); ``layerbench cache prune`` drops shards and merges
the index files into one.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from layerbench.storage import file_mode, is_url, write_whole

SHARD_SUFFIX = ".lbs"
# A shard is closed (renamed into place, its index written) at this size or age, so a killed capture
# loses at most this much, and a shard stays a size an object store takes in one piece.
SHARD_BYTES = 256 * 2**20
SHARD_SECONDS = 120.0
# Temporary shard files older than this belong to a writer that died; prune removes them.
STALE_SECONDS = 24 * 3600.0


def key_prefix(model_fingerprint: str, tokenizer_fingerprint: str, max_length: int, dtype: str) -> bytes:
    """The part of every key shared by one capture call (hashed once, not per text)."""
    return hashlib.sha256(f"{model_fingerprint}|{tokenizer_fingerprint}|{max_length}|{dtype}".encode()).digest()


def text_key(prefix: bytes, kind: str, text: str, batch: bytes) -> str:
    """Cache key of one text's entry of one ``kind`` (a pooling, or a per-prompt metric's tag) computed in the batch of digest ``batch``."""
    return hashlib.sha256(prefix + kind.encode() + b"\0" + batch + text.encode()).hexdigest()


def new_shard_id() -> str:
    """A shard id no other writer makes: the time in nanoseconds (hex, so names sort oldest first) and a random part."""
    return f"{time.time_ns():016x}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Location:
    """Where one entry lies: ``nbytes`` bytes at ``offset`` of shard ``shard``, an array of ``dtype`` and ``shape`` whose bytes hash to ``sha256``."""

    shard: str
    offset: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]
    sha256: bytes


@dataclass
class _Index:
    """Key -> locations (newest first) of one cache root, from the index files read so far."""

    files: set[str] = field(default_factory=set)
    entries: dict[str, list[Location]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, table: Any) -> None:
        """Add the rows of one index file (a pyarrow table with key, shard, offset, nbytes, dtype, shape, sha256)."""
        columns = table.select(["key", "shard", "offset", "nbytes", "dtype", "shape", "sha256"]).to_pydict()
        for key, shard, offset, nbytes, dtype, shape, sha in zip(*columns.values()):
            located = self.entries.setdefault(key, [])
            located.append(Location(shard, offset, nbytes, dtype, tuple(shape), sha))
            if len(located) > 1:
                located.sort(key=lambda loc: loc.shard, reverse=True)  # newest shard first: a rewrite after a corrupt read wins


_INDEXES: dict[str, _Index] = {}


@dataclass(frozen=True)
class ActivationCache:
    """Pooled per-text activations keyed by content; ``root`` is the cache folder, or an fsspec URL (``s3://...``).

    A URL root lets the workers of a distributed run share one cache on an
    object store: a shard and its index are each one object, written whole.
    """

    root: Path | str

    @cached_property
    def _remote(self) -> Any:
        """The fsspec file system of a URL root (resolved once), or None for a local folder."""
        if not is_url(self.root):
            return None
        import fsspec

        return fsspec.core.url_to_fs(str(self.root))[0]

    def _join(self, *parts: str) -> Path | str:
        if self._remote is not None:
            return "/".join([str(self.root).rstrip("/"), *parts])
        return Path(self.root).joinpath(*parts)

    def shard_path(self, shard: str) -> Path | str:
        return self._join("shards", shard + SHARD_SUFFIX)

    def index_path(self, name: str) -> Path | str:
        return self._join("index", name + ".parquet")

    def _list(self, folder: str) -> list[tuple[str, int, float]]:
        """(name, bytes, modified epoch seconds) of the files in ``folder`` of the root; empty when it does not exist."""
        path = self._join(folder)
        if self._remote is None:
            if not Path(path).is_dir():
                return []
            return [(p.name, (st := p.stat()).st_size, st.st_mtime) for p in Path(path).iterdir() if p.is_file()]
        try:
            listed = self._remote.ls(str(path), detail=True)
        except FileNotFoundError:
            return []
        out = []
        for info in listed:
            if info.get("type") != "file":
                continue
            modified = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
            stamp = modified.timestamp() if isinstance(modified, datetime) else float(modified or 0)
            out.append((str(info["name"]).rsplit("/", 1)[-1], int(info.get("size") or 0), stamp))
        return out

    def _read_bytes(self, path: Path | str) -> bytes:
        return self._remote.cat_file(str(path)) if self._remote is not None else Path(path).read_bytes()

    def index_files(self, skip: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, Any]]:
        """(name, pyarrow table) of each index file, oldest first, but those named in ``skip``.

        A half-copied or foreign file is left out: its entries are simply not found.
        """
        import pyarrow.parquet as pq

        tables = []
        for name, _, _ in sorted(self._list("index")):
            if not name.endswith(".parquet") or name in skip:
                continue
            try:
                tables.append((name, pq.read_table(io.BytesIO(self._read_bytes(self._join("index", name))))))
            except (OSError, ValueError):
                continue
        return tables

    def index(self) -> _Index:
        """This root's index, after reading the index files written since it was last read (by any process)."""
        index = _INDEXES.setdefault(str(self.root), _Index())
        with index.lock:
            for name, table in self.index_files(skip=index.files):
                index.files.add(name)
                index.add(table)
        return index

    def read(self, keys: Iterable[str]) -> tuple[dict[str, np.ndarray], int]:
        """The entries found for ``keys``, and how many keys were present but failed their checksum everywhere (truncated, corrupt).

        Entries of one shard are read through one open file (a URL root: one ``cat_ranges`` call).
        """
        entries = self.index().entries
        wanted = {key: entries[key] for key in dict.fromkeys(keys) if key in entries}
        found: dict[str, np.ndarray] = {}
        attempt = 0
        while True:  # the newest copy of each key first, then older copies of the keys whose copy failed
            todo = {key: locs[attempt] for key, locs in wanted.items() if key not in found and attempt < len(locs)}
            if not todo:
                break
            for key, blob in self._fetch(todo).items():
                loc = todo[key]
                if blob is not None and len(blob) == loc.nbytes and hashlib.sha256(blob).digest() == loc.sha256:
                    found[key] = np.frombuffer(blob, dtype=loc.dtype).reshape(loc.shape)
            attempt += 1
        return found, sum(key not in found for key in wanted)

    def _fetch(self, where: dict[str, Location]) -> dict[str, bytes | None]:
        """The bytes at each key's location (None where the shard is missing or short)."""
        by_shard: dict[str, list[str]] = {}
        for key, loc in where.items():
            by_shard.setdefault(loc.shard, []).append(key)
        out: dict[str, bytes | None] = {}
        for shard, keys in by_shard.items():
            keys.sort(key=lambda k: where[k].offset)
            path = self.shard_path(shard)
            try:
                if self._remote is not None:
                    blobs = self._remote.cat_ranges([str(path)] * len(keys), [where[k].offset for k in keys], [where[k].offset + where[k].nbytes for k in keys],
                                                    on_error="return")
                    out.update({k: b if isinstance(b, bytes) else None for k, b in zip(keys, blobs)})
                    continue
                with open(path, "rb") as handle:
                    for k in keys:
                        handle.seek(where[k].offset)
                        out[k] = handle.read(where[k].nbytes)
            except OSError:  # the shard is gone (pruned) or unreadable: its entries are recomputed
                out.update(dict.fromkeys(keys))
        return out

    def writer(self, model: str = "") -> ShardWriter:
        """A writer of new entries, labelled with ``model`` (what ``layerbench cache`` reports them under)."""
        return ShardWriter(self, model)


class ShardWriter:
    """Appends entries to one shard after another; each shard is renamed into place and then indexed on :meth:`flush`.

    Not thread-safe: one thread puts (the capture's writer thread). ``close``
    flushes; a writer killed before it leaves only a temporary file, which
    ``layerbench cache prune`` removes a day later.
    """

    def __init__(self, cache: ActivationCache, model: str = "") -> None:
        self.cache, self.model = cache, model
        self._file: Any = None
        self._temp: Path | None = None
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0
        self._opened = 0.0
        self.shard = ""

    def _open(self) -> None:
        self.shard = new_shard_id()
        if self.cache._remote is None:
            folder = Path(self.cache._join("shards"))
            folder.mkdir(parents=True, exist_ok=True)
        else:  # built locally, uploaded whole
            from layerbench.config import cache_dir

            folder = cache_dir() / "spill"
            folder.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.shard}.", suffix=SHARD_SUFFIX + ".tmp")
        os.chmod(temp, file_mode())
        self._file, self._temp = os.fdopen(fd, "wb", buffering=1 << 20), Path(temp)
        self._opened = time.monotonic()

    def put(self, key: str, array: np.ndarray) -> None:
        """Append one entry: float64 stays float64 (per-prompt values), anything else becomes float32 (pooled states)."""
        if self._file is None:
            self._open()
        dtype = np.float64 if array.dtype == np.float64 else np.float32
        data = np.ascontiguousarray(array, dtype=dtype).tobytes()
        self._file.write(data)
        self._rows.append({"key": key, "offset": self._bytes, "nbytes": len(data), "dtype": np.dtype(dtype).str, "shape": list(array.shape),
                           "sha256": hashlib.sha256(data).digest()})
        self._bytes += len(data)
        if self._bytes >= SHARD_BYTES or time.monotonic() - self._opened >= SHARD_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Put the current shard in place, then its index (a reader finds both or neither); nothing to do when empty."""
        if self._file is None:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        file, temp, rows, shard = self._file, self._temp, self._rows, self.shard
        self._file, self._temp, self._rows, self._bytes = None, None, [], 0
        assert temp is not None
        try:
            file.close()
            target = self.cache.shard_path(shard)
            if isinstance(target, Path):
                os.replace(temp, target)
            else:
                self.cache._remote.put_file(str(temp), target)
                temp.unlink()
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        written = datetime.now(timezone.utc)
        table = pa.table({
            "key": pa.array([r["key"] for r in rows], pa.string()),
            "shard": pa.array([shard] * len(rows), pa.string()),
            "offset": pa.array([r["offset"] for r in rows], pa.int64()),
            "nbytes": pa.array([r["nbytes"] for r in rows], pa.int64()),
            "dtype": pa.array([r["dtype"] for r in rows], pa.string()),
            "shape": pa.array([r["shape"] for r in rows], pa.list_(pa.int32())),
            "sha256": pa.array([r["sha256"] for r in rows], pa.binary(32)),
            "model": pa.array([self.model] * len(rows), pa.string()),
            "written_at": pa.array([written] * len(rows), pa.timestamp("s", tz="UTC")),
        })
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        write_whole(self.cache.index_path(shard), buffer.getvalue(), self.cache._remote)

    def close(self) -> None:
        self.flush()

    def abandon(self) -> None:
        """Drop the current shard unwritten (an error while putting)."""
        if self._file is not None:
            self._file.close()
            assert self._temp is not None
            self._temp.unlink(missing_ok=True)
            self._file, self._rows, self._bytes = None, [], 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Holdings:
    """What one model holds in the cache (or several models, summed with ``+``).

    Attributes:
        shards: its shards on disk.
        entries: the entries a read uses (the newest readable copy of each key).
        superseded: older copies of keys written again later (a batch recomputed after a corrupt read); a read skips them.
        unreadable: entries their shard cannot give (the shard missing, or too short for them: truncated).
        bytes: its shards' bytes on disk (whatever they hold).
    """

    shards: int = 0
    entries: int = 0
    superseded: int = 0
    unreadable: int = 0
    bytes: int = 0

    def __add__(self, other: Holdings) -> Holdings:
        return Holdings(*(a + b for a, b in zip(astuple(self), astuple(other))))


@dataclass(frozen=True)
class CacheSummary:
    """What a cache holds (``layerbench cache``): every byte on disk is in one model's line or in ``unindexed``.

    Attributes:
        by_model: model -> its :class:`Holdings`.
        unindexed: (files, bytes) of shards without an index (a writer still writing, or one that died) and leftovers of the one-file-per-entry format.
        oldest, newest: when the oldest and newest indexed shards were written (None when empty).
    """

    by_model: dict[str, Holdings]
    unindexed: tuple[int, int]
    oldest: datetime | None = None
    newest: datetime | None = None

    @property
    def indexed(self) -> Holdings:
        """The sum of the model lines."""
        return sum(self.by_model.values(), Holdings())

    @property
    def shards(self) -> int:
        return self.indexed.shards

    @property
    def entries(self) -> int:
        return self.indexed.entries

    @property
    def bytes(self) -> int:
        """Every byte the cache holds on disk: the model lines' and the unindexed files'."""
        return self.indexed.bytes + self.unindexed[1]


def _index_table(cache: ActivationCache) -> Any:
    """Every index row of ``cache`` as one pyarrow table (with a ``shard`` column)."""
    import pyarrow as pa

    tables = [table.append_column("index_file", pa.array([name] * table.num_rows, pa.string())) for name, table in cache.index_files()]
    return pa.concat_tables(tables, promote_options="default") if tables else None


def _entry_states(table: Any, shard_sizes: dict[str, int]) -> Any:
    """The index rows as a data frame with ``state``: ``entry`` (the copy a read uses), ``superseded`` or ``unreadable``.

    An entry is unreadable when its shard is missing or ends before it (what a read would find short; a shard whose bytes
    changed in place is only found out by reading it, and recomputed then). Of the readable copies of one key a read takes
    the newest shard's (:meth:`_Index.add`); the older ones are superseded.
    """
    frame = table.select(["key", "shard", "offset", "nbytes", "model", "written_at"]).to_pandas()
    frame["model"] = frame.model.fillna("").astype(str).replace("", "(unnamed)")
    size = frame.shard.map(shard_sizes)
    readable = size.notna() & (frame.offset + frame.nbytes <= size.fillna(-1))
    newest_first = frame[readable].sort_values("shard", ascending=False, kind="stable")
    superseded = newest_first.index[newest_first.key.duplicated()]
    frame["state"] = np.where(readable, "entry", "unreadable")
    frame.loc[superseded, "state"] = "superseded"
    return frame


def summarize(cache: ActivationCache) -> CacheSummary:
    """What ``cache`` holds: per model its shards, entries (readable, superseded, unreadable) and bytes, its age, and files no index lists."""
    table = _index_table(cache)
    listed = cache._list("shards")
    shard_sizes = {name.removesuffix(SHARD_SUFFIX): size for name, size, _ in listed if name.endswith(SHARD_SUFFIX)}
    indexed: set[str] = set()
    by_model: dict[str, Holdings] = {}
    oldest = newest = None
    if table is not None:
        frame = _entry_states(table, shard_sizes)
        indexed = set(frame.shard)
        for model, group in frame.groupby("model", sort=True):
            on_disk = {shard for shard in group.shard.unique() if shard in shard_sizes}
            counts = group.state.value_counts()
            by_model[str(model)] = Holdings(shards=len(on_disk), entries=int(counts.get("entry", 0)), superseded=int(counts.get("superseded", 0)),
                                            unreadable=int(counts.get("unreadable", 0)), bytes=sum(shard_sizes[shard] for shard in on_disk))
        oldest, newest = frame.written_at.min().to_pydatetime(), frame.written_at.max().to_pydatetime()
    stray = [size for name, size, _ in listed if name.removesuffix(SHARD_SUFFIX) not in indexed]
    legacy = [size for _, size in _legacy_files(cache)]
    return CacheSummary(by_model=by_model, unindexed=(len(stray) + len(legacy), sum(stray) + sum(legacy)), oldest=oldest, newest=newest)


def _legacy_files(cache: ActivationCache) -> list[tuple[Path, int]]:
    """Entries of the one-file-per-entry format (``<k[:2]>/<k>.lbc``), which this version never reads (local roots only)."""
    if cache._remote is None and Path(cache.root).is_dir():
        return [(p, p.stat().st_size) for p in Path(cache.root).glob("[0-9a-f][0-9a-f]/*.lbc")]
    return []


@dataclass(frozen=True)
class Removal:
    """One file ``prune`` removes (or would): its name under the root, the model its entries are of, its bytes, when it was
    written (UTC; a file no index lists: when last modified), and why it goes."""

    name: str
    model: str
    bytes: int
    written: datetime
    reason: str


def prune(cache: ActivationCache, older_than_days: float | None = None, max_bytes: int | None = None, models: Sequence[str] = (),
          everything: bool = False, dry_run: bool = False) -> list[Removal]:
    """Remove shards, whole: those written more than ``older_than_days`` ago, those of ``models``, the oldest until the
    rest fit in ``max_bytes``, or all (``everything``); and, whatever is asked, shards with no entry a read uses (every one
    superseded or unreadable), stale temporary files and the old format's files. The remaining index files are merged into one.

    Returns:
        What was removed (with ``dry_run``: what would be), oldest first.

    A shard's index goes before the shard, so a reader never finds an entry whose shard is gone
    (one that read the index just before finds the bytes missing and recomputes).
    """
    table = _index_table(cache)
    listed = cache._list("shards")
    shard_sizes = {name.removesuffix(SHARD_SUFFIX): size for name, size, _ in listed if name.endswith(SHARD_SUFFIX)}
    why: dict[str, str] = {}
    shards = None
    if table is not None:
        frame = _entry_states(table, shard_sizes)
        shards = frame.groupby("shard").agg(written=("written_at", "max"), model=("model", "first"),
                                            used=("state", lambda states: bool((states == "entry").any()))).sort_values("written")
        shards = shards[shards.index.isin(list(shard_sizes))]  # an index row whose shard is gone: only the index is rewritten
        reasons: list[tuple[str, Any]] = [("no entry a read uses", ~shards.used.to_numpy(bool))]
        if everything:
            reasons.append(("--all", np.ones(len(shards), bool)))
        if older_than_days is not None:
            cutoff = datetime.now(timezone.utc).timestamp() - older_than_days * 86400
            reasons.append((f"written more than {older_than_days:g} day(s) ago", np.array([when.timestamp() < cutoff for when in shards.written], bool)))
        if models:
            reasons.append(("--model", shards.model.isin(list(models)).to_numpy(bool)))
        for reason, chosen in reasons:
            for shard in shards.index[chosen]:
                why.setdefault(shard, reason)
        if max_bytes is not None:
            total = sum(shard_sizes[s] for s in shards.index if s not in why)
            for s in shards.index:  # oldest first
                if total <= max_bytes:
                    break
                if s not in why:
                    why[s] = "oldest, to fit --max-size"
                    total -= shard_sizes[s]
    removals = [Removal(f"shards/{s}{SHARD_SUFFIX}", str(shards.model[s]), shard_sizes[s], shards.written[s].to_pydatetime(), reason)
                for s, reason in why.items()] if shards is not None else []
    now = time.time()
    indexed = set(table.column("shard").to_pylist()) if table is not None else set()
    stale = [(name, size, modified) for name, size, modified in listed
             if name.removesuffix(SHARD_SUFFIX) not in indexed and now - modified > (0 if everything else STALE_SECONDS)]
    removals += [Removal(f"shards/{name}", "", size, datetime.fromtimestamp(modified, timezone.utc), "no index (a writer that died)")
                 for name, size, modified in stale]
    legacy = _legacy_files(cache)
    removals += [Removal(str(path.relative_to(cache.root)), "", size, datetime.fromtimestamp(path.stat().st_mtime, timezone.utc),
                         "the old one-file-per-entry format") for path, size in legacy]
    removals.sort(key=lambda r: r.written)
    if dry_run:
        return removals
    if table is not None:
        _rewrite_index(cache, table, set(why) | (indexed - set(shard_sizes)))  # and the rows of shards already gone
    for shard in why:
        _remove(cache, cache.shard_path(shard))
    for name, _, _ in stale:
        _remove(cache, cache._join("shards", name))
    for path, _ in legacy:
        path.unlink(missing_ok=True)
    _INDEXES.pop(str(cache.root), None)  # this process re-reads the merged index
    return removals


def _rewrite_index(cache: ActivationCache, table: Any, drop: set[str]) -> None:
    """One index file of the rows whose shard stays; then the old index files go (a concurrent reader sees both for a moment, never neither)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = set(table.column("index_file").to_pylist())
    keep = table.filter(pc.invert(pc.is_in(table.column("shard"), value_set=pa.array(sorted(drop), pa.string())))).drop_columns(["index_file"])
    if keep.num_rows:
        buffer = io.BytesIO()
        pq.write_table(keep, buffer)
        merged = new_shard_id()
        write_whole(cache.index_path(merged), buffer.getvalue(), cache._remote)
        files.discard(merged + ".parquet")
    for name in files:
        _remove(cache, cache._join("index", name))


def _remove(cache: ActivationCache, path: Path | str) -> None:
    try:
        if cache._remote is not None:
            cache._remote.rm_file(str(path))
        else:
            Path(path).unlink(missing_ok=True)
    except FileNotFoundError:
        pass
