"""The tidy schema, the atomic store and loading."""
from __future__ import annotations

import pandas as pd
import pytest

from layerbench import UserError, load_results
from layerbench.results import COLUMNS, ResultStore, complete_rows, model_slug
from layerbench.storage import atomic_write_bytes


def scores(n_layers: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "metric": "anisotropy",
            "layer": range(n_layers + 1),
            "value": [0.1 * i for i in range(n_layers + 1)],
            "stderr": float("nan"),
            "n": 10,
            "higher_is_better": None,
        }
    )


def test_complete_rows_adds_depth_and_identity():
    rows = complete_rows(scores(), model="org/m", revision=None, task="t", subset="s", split="test", n_layers=3, run_id="r1")
    assert list(rows.columns) == list(COLUMNS)
    assert rows["depth"].tolist() == [0.0, 1 / 3, 2 / 3, 1.0]
    assert rows["higher_is_better"].isna().all() and rows["revision"].isna().all()


def test_store_round_trip_with_config_hash(tmp_path):
    store = ResultStore(tmp_path)
    rows = complete_rows(scores(), model="org/m", revision="v2", task="t", subset="s", split="test", n_layers=3, run_id="r1")
    path = store.write_task(rows, "org/m", "v2", "t", "hash-1")
    assert path == tmp_path / "org__m@v2" / "t.parquet"
    assert store.stored_hash("org/m", "v2", "t") == "hash-1"
    assert store.stored_hash("org/m", None, "t") is None
    loaded = load_results(tmp_path)
    pd.testing.assert_frame_equal(loaded, rows)
    assert model_slug("a/b c", None) == "a__b_c"


def test_a_corrupt_result_file_is_a_user_error_naming_it(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "t.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="corrupt result file .*t.parquet"):
        load_results(tmp_path)
    assert ResultStore(tmp_path).stored_hash("m", None, "t") is None  # so the task runs again


def test_load_results_of_nothing_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no results at"):
        load_results(tmp_path / "missing")
    with pytest.raises(UserError, match="no result files"):
        load_results(tmp_path)


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")


    import os

    real_fdopen = os.fdopen

    def failing_fdopen(fd, mode):
        handle = real_fdopen(fd, mode)
        handle.write = lambda data: (_ for _ in ()).throw(OSError("disk full"))
        return handle

    monkeypatch.setattr(os, "fdopen", failing_fdopen)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]  # no stray temporary file


def test_results_go_to_an_fsspec_url_as_to_a_folder():
    # memory:// is fsspec's in-process file system: the same code path as s3:// or gs://, without a network.
    import fsspec

    import layerbench

    url = "memory://layerbench-test/results"
    summary = layerbench.run("sentence-transformers/all-MiniLM-L6-v2", tasks=["bbc-news-layer-stats"], limit=8, metrics=["mean_norm"], output=url)
    assert summary.status["sentence-transformers/all-MiniLM-L6-v2"]["bbc-news-layer-stats"] == "done"
    rows = load_results(url)
    assert set(rows.metric) == {"mean_norm"} and len(rows) == 7
    assert str(summary.manifests[0]).startswith("memory://") and fsspec.filesystem("memory").exists(str(summary.manifests[0]))
    again = layerbench.run("sentence-transformers/all-MiniLM-L6-v2", tasks=["bbc-news-layer-stats"], limit=8, metrics=["mean_norm"], output=url)
    assert again.status["sentence-transformers/all-MiniLM-L6-v2"]["bbc-news-layer-stats"] == "skipped"  # resumes from the URL too
    with pytest.raises(UserError, match="cannot open results location 'nosuchproto://x'"):
        load_results("nosuchproto://x")


def test_rows_files_and_manifest_carry_the_checkpoints_one_name_and_revision(tmp_path, monkeypatch):
    """A registry entry that pins a revision: the run stores under the checkpoint's name and revision, never the alias or --revision's None."""
    import dataclasses
    import json

    import layerbench
    from layerbench import api

    resolve = api.resolve_checkpoint
    monkeypatch.setattr(api, "resolve_checkpoint", lambda name, revision=None: dataclasses.replace(resolve(name, revision), revision="pinned-rev"))
    summary = layerbench.run("minilm-l6", tasks=["bbc-news-layer-stats"], limit=8, metrics=["mean_norm"], output=tmp_path)
    rows = load_results(tmp_path)
    assert set(rows.model) == {"sentence-transformers/all-MiniLM-L6-v2"} and set(rows.revision) == {"pinned-rev"}
    manifest = json.loads(summary.manifests[0].read_text())
    assert manifest["model"]["name"] == "sentence-transformers/all-MiniLM-L6-v2" and manifest["model"]["revision"] == "pinned-rev"
    assert "pinned-rev" in str(summary.manifests[0])


def test_a_runner_restarted_in_the_same_run_reports_its_finished_task_done_and_a_new_run_skipped(tmp_path):
    """A Ray worker that dies after finishing a task but before its reply reached the driver is restarted and the job retried:
    the retry finds the task in this run's manifest and says ``done``; a later run finds it stored and says ``skipped``."""
    from layerbench.api import resolve_config
    from layerbench.metrics.suite import MetricPlan
    from layerbench.models.resolve import resolve_checkpoint
    from layerbench.run_config import RunConfig
    from layerbench.runner import ModelRunner

    config, specs, _ = resolve_config(RunConfig.of("minilm-l6", tasks=["bbc-news-layer-stats"], limit=8, metrics=["mean_norm"], output=str(tmp_path)))
    plan, checkpoint = MetricPlan.from_names(["mean_norm"]), resolve_checkpoint("minilm-l6")

    def attempt(run_id: str) -> str:
        return ModelRunner(checkpoint, config, plan, run_id, {}, "model 1/1").run_task(specs[0], "task 1/1")

    assert attempt("run-a") == "done"
    assert attempt("run-a") == "done"  # the same run, a new worker: finished earlier in this run
    assert attempt("run-b") == "skipped"  # another run: it was there before


def test_manifests_written_before_the_typed_model_still_load_and_keep_their_fields():
    """A manifest from before the platform fingerprint, the lock and item rows (SmolLM2's first committed run, kept as a
    fixture since results/ was rebuilt) loads as a Manifest with those fields at their defaults, and a field the model
    does not type is kept when written again."""
    import json
    from pathlib import Path

    from layerbench.results import Manifest, read_manifests
    from layerbench.results.manifest import parse_manifest

    folder = Path(__file__).parent / "fixtures" / "pre-fingerprint-results" / "smollm2-135m-q4"
    runs = read_manifests([folder])["smollm2-135m-q4"]
    assert runs and all(isinstance(m, Manifest) for m in runs) and [m.run_id for m in runs] == sorted(m.run_id for m in runs)
    oldest = runs[0]  # written before fingerprints
    assert oldest.model.name == "smollm2-135m-q4" and oldest.model.n_layers == 30 and oldest.platform_id is None
    assert oldest.environment.packages["torch"].startswith("2.13") and oldest.tasks
    assert oldest.environment.lock is None
    assert any(run.tasks.get("concept-capitals") is not None and run.tasks["concept-capitals"].family == "probe" for run in runs)
    raw = json.loads(sorted(folder.glob("runs/*.json"))[0].read_text())
    again = json.loads(oldest.to_json())
    assert again["model"]["copy_source"] == raw["model"]["copy_source"]  # an untyped field survives a round trip
    with pytest.raises(UserError, match="corrupt run manifest 'x.json'"):
        parse_manifest("{", "x.json")
