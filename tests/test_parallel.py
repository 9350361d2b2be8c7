"""--jobs (layers evaluated in worker processes) and --layers (only the layers asked for) through a real run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import layerbench
from layerbench.errors import UserError
from layerbench.parallel import default_jobs, map_layers
from layerbench.run_config import RunConfig, parse_layers

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TASKS = ["concept-capitals", "mteb-lee-sts"]
KEY = ["task", "subset", "split", "metric", "layer", "protocol", "site"]


def _rows(out) -> pd.DataFrame:
    rows = layerbench.load_results(out).drop(columns=["run_id"])
    return rows.sort_values(KEY, na_position="first").reset_index(drop=True)


@pytest.mark.slow
def test_two_jobs_give_the_rows_of_one_and_a_layer_subset_gives_those_layers_rows(tmp_path):
    common = dict(tasks=TASKS, limit=60, metrics=["dataset_entropy", "anisotropy"], protocols=["layerbench"])
    layerbench.run(MODEL, output=str(tmp_path / "one"), jobs=1, **common)
    layerbench.run(MODEL, output=str(tmp_path / "two"), jobs=2, **common)
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert len(one) > 100
    pd.testing.assert_frame_equal(one, two)  # bit for bit, summaries included

    layerbench.run(MODEL, output=str(tmp_path / "some"), layers="0,3-4", jobs=1, **common | {"tasks": ["mteb-lee-sts"]})
    some = _rows(tmp_path / "some")
    per_layer = some[some.layer.notna()]
    assert set(per_layer.layer) == {0, 3, 4}
    # Each layer's scores and metrics are those of the full run: the states and the evaluation are per layer.
    full = one[(one.task == "mteb-lee-sts") & one.layer.isin([0, 3, 4])].set_index(KEY).sort_index()
    pd.testing.assert_frame_equal(per_layer.set_index(KEY).sort_index()[full.columns], full)

def test_depth_of_a_layer_subset_is_read_against_the_models_depth():
    from layerbench.evaluators.probe import probe_layers
    from layerbench.families.probe import ProbeSettings

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    states = rng.standard_normal((3, 80, 8))
    states[2, :, 0] += 4 * y  # the concept is decodable at the last layer asked for, layer 4 of 6
    rows = probe_layers(states, y, ProbeSettings(), layers=[0, 3, 4], n_layers=6).set_index("metric")
    assert rows.loc["peak_layer", "value"] == 4 and rows.loc["peak_depth", "value"] == pytest.approx(4 / 6)


def test_parse_layers_takes_numbers_and_inclusive_ranges():
    assert parse_layers("0,12,20-22") == (0, 12, 20, 21, 22)
    assert parse_layers([3, 1, 1]) == (1, 3)
    for bad in ("a", "5-3", "-1", "1-x"):
        with pytest.raises(UserError, match="--layers"):
            RunConfig.of("m", layers=bad)


def test_a_layer_beyond_the_model_is_a_one_line_error(minilm):
    from layerbench import CaptureRequest, capture_layers

    with pytest.raises(UserError, match="layer 7 asked for; the model has layers 0..6"):
        capture_layers(minilm, CaptureRequest(["a text"], layers=[2, 7], cache=False))
    states = capture_layers(minilm, CaptureRequest(["a text", "another"], layers=[2, 6], cache=False))
    assert states.pooled.shape == (2, 2, 384) and list(states.sites["residual"].layers) == [2, 6]
    np.testing.assert_array_equal(states.pooled, capture_layers(minilm, CaptureRequest(["a text", "another"], cache=False)).pooled[[2, 6]])


@pytest.mark.parametrize("model", ["minilm", "smollm"])
def test_early_layers_stop_the_forward_pass_and_equal_the_full_one_bit_for_bit(model, request):
    """--layers 0,1,3: blocks after the third never run, and every site's states are the bits of the whole pass."""
    from layerbench import CaptureRequest, capture_layers
    from layerbench.capture import CaptureStats

    handle = request.getfixturevalue(model)
    texts = ["The capital of France is Paris.", "Stocks fell sharply on Monday.", "A coin is heads up."]
    sites = ("residual", "normed", "mlp-input")
    ran = []
    hooks = [block.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, block in enumerate(handle.anatomy.blocks)]
    try:
        early = capture_layers(handle, CaptureRequest(texts, layers=[0, 1, 3], cache=False, sites=sites), stats=CaptureStats())
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(set(ran)) == [0, 1, 2]  # blocks 1..3 of the capture's numbering
    full = capture_layers(handle, CaptureRequest(texts, cache=False, sites=sites))
    for site in ("residual", "normed"):
        np.testing.assert_array_equal(early.sites[site].pooled, full.sites[site].pooled[[0, 1, 3]])
    np.testing.assert_array_equal(early.sites["mlp-input"].pooled, full.sites["mlp-input"].pooled[[0, 2]])  # mlp-input layers are 1..L


def test_map_layers_keeps_order_in_workers_and_jobs_come_from_the_environment(monkeypatch):
    assert map_layers(np.square, [1, 2, 3, 4], jobs=2) == [1, 4, 9, 16]
    monkeypatch.setenv("LAYERBENCH_JOBS", "3")
    assert default_jobs() == 3
    monkeypatch.setenv("LAYERBENCH_JOBS", "many")
    with pytest.raises(UserError, match="LAYERBENCH_JOBS must be a positive number"):
        default_jobs()


@pytest.mark.slow
def test_a_run_killed_outright_leaves_no_process_behind(tmp_path):
    """`kill -9` of a run whose layers are in worker processes: every process it started (the workers and loky's
    resource trackers, found by an environment variable they inherit) is gone a few seconds later."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid

    import psutil

    marker = uuid.uuid4().hex
    env = {**os.environ, "LAYERBENCH_TEST_RUN": marker, "LAYERBENCH_JOBS": "2"}

    def started() -> list[int]:
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("LAYERBENCH_TEST_RUN") == marker:
                    found.append(process.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return found

    run = subprocess.Popen([sys.executable, "-m", "layerbench.cli", "run", "-m", "minilm-l6", "--tasks", "concept-capitals", "--no-metrics",
                            "--no-cache", "-o", str(tmp_path / "out")], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in run.stderr:
            if "worker processes" in line:
                break
        deadline = time.monotonic() + 30
        while len(started()) < 3 and time.monotonic() < deadline:  # the run and its two workers at least
            time.sleep(0.1)
        assert len(started()) >= 3
    finally:
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 60  # the workers notice their parent is gone within seconds; 60 s leaves room on a loaded machine
    while started() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started() == []
    shared = Path("/dev/shm")  # loky's semaphores and joblib's memory-map folders, named by the run's pid: its resource tracker removed them
    assert not (shared.is_dir() and [p.name for p in shared.iterdir() if f"-{run.pid}-" in p.name or f"_{run.pid}_" in p.name])
