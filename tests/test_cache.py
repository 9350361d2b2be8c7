"""The packed activation cache: entries in shards with an index, checksummed, atomic, safe with concurrent writers, at fsspec URLs."""
from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import astuple

import numpy as np
import pytest

from layerbench.capture import cache as cache_module
from layerbench.capture.cache import ActivationCache, prune, summarize
from layerbench.cli import main


def _entries(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{seed:04d}-{i:060d}": rng.standard_normal((7, 16)).astype(np.float32) for i in range(n)}


def _removed(removals) -> tuple[int, int]:
    """(files, bytes) that a prune removed."""
    return len(removals), sum(r.bytes for r in removals)


def _fresh(root) -> ActivationCache:
    """A cache object that reads the index from disk again, as another process would."""
    cache_module._INDEXES.pop(str(root), None)
    return ActivationCache(root)


def test_entries_read_back_bit_for_bit_in_their_own_dtype(tmp_path):
    pooled, values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7, np.linspace(0, 1, 5)
    with ActivationCache(tmp_path).writer("some-model") as writer:
        writer.put("a" * 64, pooled)
        writer.put("b" * 64, values)
    found, rejected = _fresh(tmp_path).read(["a" * 64, "b" * 64, "c" * 64])
    assert rejected == 0 and set(found) == {"a" * 64, "b" * 64}
    np.testing.assert_array_equal(found["a" * 64], pooled)
    assert found["a" * 64].dtype == np.float32 and found["b" * 64].dtype == np.float64
    np.testing.assert_array_equal(found["b" * 64], values)


def test_three_thousand_entries_leave_two_files_and_read_back(tmp_path):
    entries = _entries(3000)
    with ActivationCache(tmp_path).writer() as writer:
        for key, value in entries.items():
            writer.put(key, value)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 2  # one shard, one index: 3,000 entries in two files, not 3,000
    found, _ = _fresh(tmp_path).read(entries)
    assert len(found) == 3000 and all(np.array_equal(found[k], v) for k, v in entries.items())


def test_a_shard_is_indexed_only_once_whole(tmp_path, monkeypatch):
    """Until a writer closes its shard nothing of it is visible; a writer that dies leaves only a temporary file, which prune removes."""
    writer = ActivationCache(tmp_path).writer()
    writer.put("a" * 64, np.ones((2, 2), np.float32))
    assert _fresh(tmp_path).read(["a" * 64])[0] == {}
    temps = list((tmp_path / "shards").glob(".*.tmp"))
    assert len(temps) == 1 and not list((tmp_path / "shards").glob("*.lbs"))
    old = time.time() - 2 * cache_module.STALE_SECONDS
    os.utime(temps[0], (old, old))  # a writer killed two days ago
    size = temps[0].stat().st_size
    assert _removed(prune(_fresh(tmp_path), older_than_days=365)) == (1, size)
    assert not temps[0].exists()


def test_the_index_is_refreshed_with_what_other_writers_added(tmp_path):
    first, second = _entries(5, 1), _entries(5, 2)
    reader = ActivationCache(tmp_path)
    with ActivationCache(tmp_path).writer() as writer:
        for key, value in first.items():
            writer.put(key, value)
    assert len(reader.read(first)[0]) == 5
    with ActivationCache(tmp_path).writer() as writer:
        for key, value in second.items():
            writer.put(key, value)
    assert len(reader.read(second)[0]) == 5  # the same process, a later call: the new index file is read


def _write_many(root: str, seed: int) -> None:
    cache_module.SHARD_BYTES = 20_000  # 9 shards each (45 entries of 448 bytes), so the two writers interleave their renames and indexes
    with ActivationCache(root).writer(f"writer-{seed}") as writer:
        for key, value in _entries(400, seed).items():
            writer.put(key, value)


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(str(tmp_path), seed)) for seed in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    expected = _entries(400, 1) | _entries(400, 2)
    found, rejected = _fresh(tmp_path).read(expected)
    assert rejected == 0 and len(found) == 800 and all(np.array_equal(found[k], v) for k, v in expected.items())
    held = summarize(ActivationCache(tmp_path))
    assert held.entries == 800 and held.shards == 18 and set(held.by_model) == {"writer-1", "writer-2"}


def test_an_fsspec_url_works_as_a_folder_does():
    root = "memory://layerbench-test-cache"
    entries = _entries(50)
    with ActivationCache(root).writer("m") as writer:
        for key, value in entries.items():
            writer.put(key, value)
    found, _ = _fresh(root).read(entries)
    assert len(found) == 50 and all(np.array_equal(found[k], v) for k, v in entries.items())
    assert summarize(ActivationCache(root)).entries == 50
    assert _removed(prune(ActivationCache(root), everything=True))[0] == 1
    assert _fresh(root).read(entries)[0] == {}


def test_prune_by_model_by_size_and_merges_the_index(tmp_path):
    for seed in range(4):
        with ActivationCache(tmp_path).writer(f"model-{seed % 2}") as writer:
            for key, value in _entries(10, seed).items():
                writer.put(key, value)
    legacy = tmp_path / "ab" / ("ab" + "0" * 62 + ".lbc")  # the one-file-per-entry format, never read now
    legacy.parent.mkdir()
    legacy.write_bytes(b"LBC1" + b"\0" * 100)
    shard_bytes = 10 * 7 * 16 * 4
    assert summarize(ActivationCache(tmp_path)).unindexed == (1, 104)
    assert _removed(prune(ActivationCache(tmp_path), models=["model-0"])) == (3, 2 * shard_bytes + 104)
    held = summarize(ActivationCache(tmp_path))
    assert (held.shards, held.entries, set(held.by_model)) == (2, 20, {"model-1"}) and held.unindexed == (0, 0)
    assert len(list((tmp_path / "index").iterdir())) == 1  # merged
    assert len(_fresh(tmp_path).read(_entries(10, 1) | _entries(10, 3))[0]) == 20
    assert _removed(prune(ActivationCache(tmp_path), max_bytes=shard_bytes)) == (1, shard_bytes)  # the oldest goes first
    assert set(_fresh(tmp_path).read(_entries(10, 1) | _entries(10, 3))[0]) == set(_entries(10, 3))


def test_the_cache_command_shows_and_prunes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAYERBENCH_ACTIVATION_CACHE", str(tmp_path))
    with ActivationCache(tmp_path).writer("org/model") as writer:
        for key, value in _entries(10).items():
            writer.put(key, value)

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        return (code, *capsys.readouterr())

    code, out, _ = cli("cache")
    assert code == 0 and "4.4 KB on disk" in out
    assert [line.split() for line in out.splitlines() if "org/model" in line or "total" in line] == [
        ["org/model", "1", "10", "0", "0", "4.4", "KB"], ["total", "1", "10", "0", "0", "4.4", "KB"]]
    code, _, err = cli("cache", "prune")
    assert code == 2 and err.startswith("error: say what to remove: --older-than")
    code, _, err = cli("cache", "prune", "--max-size", "lots")
    assert code == 2 and err.strip() == "error: --max-size must be a number of bytes such as 8G, got 'lots'"
    listing = cli("cache", "prune", "--all", "--dry-run")[1].splitlines()
    assert listing[-1] == "would remove 1 file(s), 4.4 KB"
    shard = next((tmp_path / "shards").glob("*.lbs")).name
    fields = listing[1].split()
    # The age is whole seconds since the write: 0 or a few on a slow runner, never a fixed number.
    assert fields[:4] + fields[5:] == [f"shards/{shard}", "org/model", "4.4", "KB", "s", "--all"] and int(fields[4]) < 30
    assert summarize(ActivationCache(tmp_path)).entries == 10
    assert cli("cache", "prune", "--all")[1].strip() == "removed 1 file(s), 4.4 KB"
    assert summarize(ActivationCache(tmp_path)).entries == 0


def test_a_truncated_shard_recomputed_adds_up_and_its_dead_shard_goes(tmp_path, monkeypatch, capsys):
    """A shard cut short loses its last entries; the batch written again supersedes the rest. The per-model line counts
    the copies a read uses apart from the superseded and unreadable ones, the total equals the sum of the lines and of the
    files on disk, and prune (whatever it is asked) removes the shard that holds nothing a read uses."""
    monkeypatch.setenv("LAYERBENCH_ACTIVATION_CACHE", str(tmp_path))
    entries = _entries(10)
    with ActivationCache(tmp_path).writer("org/model") as writer:
        for key, value in entries.items():
            writer.put(key, value)
    first = next((tmp_path / "shards").glob("*.lbs"))
    entry_bytes = 7 * 16 * 4
    with open(first, "r+b") as handle:
        handle.truncate(6 * entry_bytes + 100)  # entries 7..10 cut off, the 7th in the middle
    with ActivationCache(tmp_path).writer("org/model") as writer:  # the batch recomputed, as a capture does after the failed read
        for key, value in entries.items():
            writer.put(key, value)
    with ActivationCache(tmp_path).writer("other/model") as writer:
        for key, value in _entries(3, 1).items():
            writer.put(key, value)

    held = summarize(_fresh(tmp_path))
    part = held.by_model["org/model"]
    assert (part.shards, part.entries, part.superseded, part.unreadable) == (2, 10, 6, 4)
    assert part.bytes == 6 * entry_bytes + 100 + 10 * entry_bytes
    on_disk = sum(p.stat().st_size for p in (tmp_path / "shards").iterdir())
    assert held.bytes == held.indexed.bytes == sum(h.bytes for h in held.by_model.values()) == on_disk
    assert held.entries == 13

    code = main(["cache"])
    out = capsys.readouterr().out
    assert code == 0
    lines = {line.split()[0]: line.split()[1:5] for line in out.splitlines()[2:] if line.startswith("  ")}
    assert lines == {"org/model": ["2", "10", "6", "4"], "other/model": ["1", "3", "0", "0"], "total": ["3", "13", "6", "4"]}

    removals = prune(_fresh(tmp_path), models=["other/model"], dry_run=True)
    assert [(r.name, r.model, r.reason) for r in removals] == [
        (f"shards/{first.name}", "org/model", "no entry a read uses"), (removals[1].name, "other/model", "--model")]
    assert first.exists()  # a dry run
    prune(_fresh(tmp_path), models=["other/model"])
    assert not first.exists()
    held = summarize(_fresh(tmp_path))
    assert list(held.by_model) == ["org/model"] and astuple(held.by_model["org/model"]) == (1, 10, 0, 0, 10 * entry_bytes)
    found, rejected = _fresh(tmp_path).read(entries)
    assert rejected == 0 and all(np.array_equal(found[k], v) for k, v in entries.items())


@pytest.mark.parametrize("raw, expected", [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("1.5K", 1536), ("100", 100), ("2GB", 2 * 2**30)])
def test_sizes_parse_as_bytes(raw, expected):
    from layerbench.config import parse_bytes

    assert parse_bytes(raw, "x") == expected
