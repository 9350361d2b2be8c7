"""The Ray executor on a local two-CPU cluster started by the test: same rows as in-process, a killed worker retried."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import layerbench
from layerbench.errors import UserError
from layerbench.results import KEY, load_results

MODELS = ["sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'layerbench[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # nothing outside this machine
    yield ray
    ray.shutdown()


def _rows(path) -> pd.DataFrame:
    return load_results(path).drop(columns="run_id").sort_values(KEY).reset_index(drop=True)


def _assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = ["model", "task", "subset", "split", "metric", "layer"]
    assert a[key].astype(str).equals(b[key].astype(str))
    # Same cached states in both runs; evaluators may sum in another order with other thread counts.
    np.testing.assert_allclose(a.value.to_numpy(float), b.value.to_numpy(float), rtol=1e-6, atol=1e-9, equal_nan=True)


def _dying_worker_class():
    """A ModelWorker whose first attempt at ``concept-capitals`` kills its process mid-job (model loaded, nothing written),
    as a lost node or an out-of-memory kill would; the marker file records that it died."""
    import os
    from pathlib import Path

    from layerbench.ray_executor import ModelWorker

    class DyingWorker(ModelWorker):
        def run_task(self, spec, position):
            marker = Path(self.runner.config.output) / f".fault-{self.runner.name.replace('/', '__')}-{spec.name}"
            if spec.name == "concept-capitals" and not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                os._exit(1)
            return super().run_task(spec, position)

    return DyingWorker


@pytest.fixture(scope="module")
def ray_run(ray_cluster, tmp_path_factory):
    """The quick suite on both models on Ray, once per module, each model's worker killed mid-job at its first
    ``concept-capitals``: (results folder, summary). The two tests below read this one run."""
    import layerbench.ray_executor

    out = tmp_path_factory.mktemp("ray") / "results"
    with pytest.MonkeyPatch.context() as patch:
        # A class made in a function is shipped to the workers by value, so they run this test's worker, not the package's.
        patch.setattr(layerbench.ray_executor, "ModelWorker", _dying_worker_class())
        summary = layerbench.run(MODELS, suite="quick", output=out, executor="ray")
    return out, summary


@pytest.mark.slow
def test_the_quick_suite_on_ray_gives_the_rows_of_an_in_process_run(ray_run, quick_run):
    out, on_ray = ray_run
    local = quick_run[0]  # the session's in-process run of the same suite (tests/conftest.py)
    quick = ["bbc-news-layer-stats", "concept-capitals", "mteb-lee-sts", "similarity-quick"]
    assert on_ray.status == {model: dict.fromkeys(quick, "done") for model in MODELS}
    _assert_same_rows(_rows(local), _rows(out))
    # A finished job is never redone: the same run again skips every job.
    again = layerbench.run(MODELS, suite="quick", output=out, executor="ray")
    assert all(s == "skipped" for per in again.status.values() for s in per.values()) and again.forward_passes == 0


@pytest.mark.slow
def test_a_worker_killed_mid_job_is_retried_and_nothing_is_lost_or_duplicated(ray_run, quick_run):
    out, summary = ray_run
    for model in MODELS:
        slug = model.replace("/", "__")
        assert (out / f".fault-{slug}-concept-capitals").exists()  # it did die
        rows = _rows(out / slug)
        assert not rows.duplicated(KEY).any()
        _assert_same_rows(_rows(quick_run[0] / slug), rows)  # the session's in-process run (tests/conftest.py)
    for manifest in summary.manifests:
        # The restarted worker picked up the manifest of the one that died: every task is recorded once.
        recorded = json.loads(manifest.read_text())
        assert recorded["status"] == "complete" and set(recorded["tasks"]) == {"bbc-news-layer-stats", "concept-capitals", "mteb-lee-sts", "similarity-quick"}


def test_ray_is_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(UserError, match=r"pip install 'layerbench\[ray\]'"):
        layerbench.run(MODELS[0], tasks=["bbc-news-layer-stats"], limit=8, metrics=["mean_norm"], output="/tmp/unused", executor="ray")
    with pytest.raises(UserError, match="--address needs --executor ray"):
        layerbench.run(MODELS[0], tasks=["bbc-news-layer-stats"], address="auto")


def test_the_local_executor_never_imports_ray(tmp_path):
    code = ("import sys, layerbench; layerbench.run('sentence-transformers/all-MiniLM-L6-v2', tasks=['bbc-news-layer-stats'], limit=8, "
            f"metrics=['mean_norm'], output={str(tmp_path)!r}); assert 'ray' not in sys.modules, 'ray was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_retried_job_whose_rows_this_run_wrote_is_done_not_skipped(tmp_path):
    """A worker killed after writing a task's rows but before its manifest (or before its reply reached the driver) leaves
    the retry to find the rows: they carry this run's id, so the retry says "done", never "skipped" (the old flake)."""
    from layerbench.api import resolve_config
    from layerbench.models.resolve import resolve_checkpoint
    from layerbench.run_config import RunConfig
    from layerbench.runner import ModelRunner

    config, specs, plan = resolve_config(RunConfig.of([MODELS[0]], tasks=["bbc-news-layer-stats"], limit=8, metrics=["mean_norm"], output=str(tmp_path)))
    checkpoint = resolve_checkpoint(MODELS[0], None)
    first = ModelRunner(checkpoint, config, plan, "run-1", {}, "model 1/1")
    assert first.run_task(specs[0], "task 1/1") == "done"
    for manifest in tmp_path.glob("*/runs/*.json"):
        manifest.unlink()  # killed before the manifest was written
    assert ModelRunner(checkpoint, config, plan, "run-1", {}, "model 1/1").run_task(specs[0], "task 1/1") == "done"
    assert ModelRunner(checkpoint, config, plan, "run-2", {}, "model 1/1").run_task(specs[0], "task 1/1") == "skipped"  # another run's rows
