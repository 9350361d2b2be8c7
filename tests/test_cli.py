"""The ``layerbench`` command: real runs, resume, and one-line exit-2 errors for user mistakes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layerbench import load_results
from layerbench.cli import main
from layerbench.metrics import list_metrics


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["run", "--model", "some-org/some-model"], "Hugging Face Hub is unreachable"),
        (["run", "--model", "minilm-l6", "--tasks", "no-such-task"], "unknown task 'no-such-task'"),
        (["run", "--model", "minilm-l6", "--suite", "nope"], "unknown suite 'nope'"),
        (["run", "--model", "minilm-l6", "--device", "tpu"], "'tpu' is not one of"),
        (["run", "--model", "minilm-l6", "--dtype", "int3"], "'int3' is not one of"),
        (["run", "--model", "minilm-l6", "--batch-size", "zero"], "'zero' is not a positive integer or 'auto'"),
        (["run", "--model", "minilm-l6", "--limit", "1"], "1 is not in the range x>=2"),
        (["run", "--model", "minilm-l6", "--metrics", "anisotropy,entropy9"], "unknown metric 'entropy9'"),
        (["run", "--model", "minilm-l6", "--no-metrics"], "nothing to run: every chosen task is label-free"),
        (["run", "--model", "minilm-l6", "--no-metrics", "--metrics", "anisotropy"], "give --metrics or --no-metrics, not both"),
        (["run", "--model", "minilm-l6", "--metric-samples", "1"], "1 is not in the range x>=2"),
        (["run"], "Missing option '--model'"),
        (["list", "things"], "No such command 'things'"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_2_writing_nothing(capsys, tmp_path, args, message):
    output = tmp_path / "out"
    args = args + (["--output", str(output)] if args[0] == "run" and len(args) > 1 else [])
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not output.exists()


def test_the_installed_command_exits_2_on_a_user_mistake():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "layerbench"), "run", "--model", "no-such-model"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "unknown model" in proc.stderr


def test_list_commands(capsys):
    code, out, _ = run_cli(capsys, "list", "models")
    assert code == 0 and "smollm2-135m-q4" in out and "sentence-transformers/all-MiniLM-L6-v2" in out
    code, out, _ = run_cli(capsys, "list", "tasks")
    assert code == 0 and "bbc-news-layer-stats" in out and "suite quick" in out
    code, out, _ = run_cli(capsys, "list", "metrics")
    assert code == 0 and "anisotropy" in out and "descriptive" in out
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0 and "--batch-size" in out


@pytest.mark.slow
def test_quick_suite_on_both_packaged_models_then_resume_and_overwrite(capsys, tmp_path):
    out_dir = tmp_path / "results"
    code, out, err = run_cli(capsys, "run", "-m", "minilm-l6", "-m", "smollm2-135m-q4", "--suite", "quick", "-o", str(out_dir), "--quiet")
    assert code == 0, err
    assert "2 task(s) run" in out
    df = load_results(out_dir)
    assert set(df["model"]) == {"sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4"}
    per_model = df.groupby("model").size().to_dict()
    n_metrics = len(list_metrics())
    assert per_model == {"sentence-transformers/all-MiniLM-L6-v2": n_metrics * 7, "smollm2-135m-q4": n_metrics * 31}
    assert (out_dir / "smollm2-135m-q4" / "metrics" / "bbc-news-layer-stats.parquet").is_file()
    whole_set = df[df.metric.isin([m.name for m in list_metrics() if m.input_kind != "tokens"])]
    assert (whole_set["n"] == 64).all() and df["depth"].between(0, 1).all()
    tokens = df[df.metric == "prompt_entropy"]
    assert tokens["n"].between(60, 64).all() and (tokens["stderr"] > 0).all()  # a few headlines may be one token
    assert df[(df.metric == "anisotropy")]["value"].between(-1, 1).all()
    assert df[df.metric == "dataset_entropy_normalized"]["value"].between(0, 1).all()
    assert df[df.metric == "curvature"]["value"].between(0, np.pi).all()
    assert df[df.metric.isin(["infonce", "dime", "lidar", "intrinsic_dimension"])]["value"].gt(0).all()
    manifests = list(out_dir.glob("*/runs/*.json"))
    assert len(manifests) == 2
    manifest = json.loads(manifests[0].read_text())
    assert manifest["status"] == "complete" and manifest["forward_passes"] >= 1
    assert {"config_hash", "environment", "timings_seconds", "model"} <= set(manifest)
    assert manifest["environment"]["packages"]["torch"]

    # The same config again, the model named by its full name this time:
    # every task is skipped and no forward pass runs.
    code, out, _ = run_cli(capsys, "run", "-m", "sentence-transformers/all-MiniLM-L6-v2", "--suite", "quick", "-o", str(out_dir), "--quiet")
    assert code == 0 and "0 task(s) run, 1 skipped, 0 forward passes" in out

    # Another config over existing results is refused, and the results survive.
    before = (out_dir / "sentence-transformers__all-MiniLM-L6-v2" / "metrics" / "bbc-news-layer-stats.parquet").read_bytes()
    code, _, err = run_cli(capsys, "run", "-m", "minilm-l6", "--suite", "quick", "--limit", "32", "-o", str(out_dir))
    assert code == 2 and "from another config; pass --overwrite" in err
    assert (out_dir / "sentence-transformers__all-MiniLM-L6-v2" / "metrics" / "bbc-news-layer-stats.parquet").read_bytes() == before
    code, out, _ = run_cli(capsys, "run", "-m", "minilm-l6", "--suite", "quick", "--limit", "32", "-o", str(out_dir), "--overwrite", "--quiet")
    assert code == 0 and "1 task(s) run" in out
    assert (load_results(out_dir / "sentence-transformers__all-MiniLM-L6-v2")["n"] == 32).all()


def write_task(folder: Path, name: str, data_path: str) -> None:
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\nfamily: label-free\ndescription: test task\n"
        f"data: {{source: local, path: {data_path}}}\nmain_score: anisotropy\n"
    )


def test_an_interrupted_run_resumes_where_it_stopped(capsys, tmp_path, monkeypatch):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "good.jsonl").write_text("".join(json.dumps({"text": f"sentence {i} here"}) + "\n" for i in range(6)))
    write_task(tasks, "a-good", "good.jsonl")
    write_task(tasks, "b-broken", "broken.csv")  # does not exist yet: the run stops here
    monkeypatch.setenv("LAYERBENCH_TASKS", str(tasks))
    out_dir = tmp_path / "results"
    code, _, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "a-good,b-broken", "-o", str(out_dir))
    assert code == 2 and "broken.csv' does not exist" in error_lines(err)[-1]
    assert set(load_results(out_dir)["task"]) == {"a-good"}  # the finished task is kept

    (tasks / "broken.csv").write_text("text\nfirst line\nsecond line\nthird line\n")
    code, out, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "a-good,b-broken", "-o", str(out_dir))
    assert code == 0 and "1 task(s) run, 1 skipped" in out
    assert "a-good: already done, skipped" in err
    assert set(load_results(out_dir)["task"]) == {"a-good", "b-broken"}
    # The resumed run's manifest ends complete although its first task was skipped.
    statuses = {json.loads(p.read_text())["status"] for p in out_dir.glob("*/runs/*.json")}
    assert statuses == {"complete", "running"}  # the interrupted run's stays "running"


def test_empty_data_is_a_user_error(capsys, tmp_path, monkeypatch):
    (tmp_path / "empty.csv").write_text("text\n")
    write_task(tmp_path, "empty-task", "empty.csv")
    monkeypatch.setenv("LAYERBENCH_TASKS", str(tmp_path))
    code, _, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "empty-task", "-o", str(tmp_path / "out"))
    assert code == 2 and "task 'empty-task': its data set is empty" in error_lines(err)[-1]
    assert not list((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.parametrize(
    "body, message",
    [
        ("name: x\nfamily: representation-stats\n", "field 'description': Field required"),
        ("name: Bad Name\nfamily: f\ndescription: d\ndata: {source: packaged, dataset: bbc-news}\nmetrics: [a]\nmain_score: a\n", "field 'name': String should match pattern"),
        ("name: x\nfamily: f\ndescription: d\ndata: {source: ftp, path: p}\nmetrics: [a]\nmain_score: a\n", "field 'data'"),
        ("- just\n- a list\n", "expected a mapping of fields"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_malformed_spec_names_file_and_field_and_exits_2(capsys, tmp_path, monkeypatch, body, message):
    (tmp_path / "broken.yaml").write_text(body)
    monkeypatch.setenv("LAYERBENCH_TASKS", str(tmp_path))
    code, _, err = run_cli(capsys, "list", "tasks")
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and "broken.yaml" in lines[0] and message in lines[0], err


def test_chosen_metrics_their_sample_and_a_changed_choice(capsys, tmp_path, monkeypatch):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "sentences.jsonl").write_text("".join(json.dumps({"text": f"sentence number {i} is about topic {i % 5}"}) + "\n" for i in range(40)))
    write_task(tasks, "sentences", "sentences.jsonl")
    monkeypatch.setenv("LAYERBENCH_TASKS", str(tasks))
    out_dir = tmp_path / "results"
    code, _, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "sentences", "-o", str(out_dir), "--metrics", "anisotropy,dataset_entropy", "--no-cache")
    assert code == 0, err
    df = load_results(out_dir)
    assert sorted(set(df["metric"])) == ["anisotropy", "dataset_entropy"] and len(df) == 2 * 7
    manifest = json.loads(next(out_dir.glob("*/runs/*.json")).read_text())
    record = manifest["tasks"]["sentences"]
    assert record["metrics"]["sampled_texts"] == 0 and manifest["capture"]["texts_computed"] == 40  # pooled metrics: no extra pass

    # Another choice of metrics is another config: refused, then redone with --overwrite.
    args = ["run", "-m", "minilm-l6", "--tasks", "sentences", "-o", str(out_dir), "--metrics", "lidar,prompt_entropy", "--metric-samples", "8", "--no-cache"]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "holds metrics of 'sentences' from another config" in err
    code, _, err = run_cli(capsys, *args, "--overwrite")
    assert code == 0, err
    df = load_results(out_dir)
    assert sorted(set(df["metric"])) == ["lidar", "prompt_entropy"]
    assert (df[df.metric == "lidar"]["n"] == 8).all() and (df[df.metric == "prompt_entropy"]["n"] == 8).all()
    manifest = json.loads(max(out_dir.glob("*/runs/*.json"), key=lambda p: p.stat().st_mtime).read_text())
    record = manifest["tasks"]["sentences"]
    assert record["metrics"]["sampled_texts"] == 8 and record["metrics"]["views_per_text"] == 8
    # The only extra forward passes are the 8 x 8 views (a few may repeat); token metrics ride on the pass.
    assert 40 < manifest["capture"]["texts_computed"] <= 40 + 64
