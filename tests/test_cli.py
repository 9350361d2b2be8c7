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
from layerbench.errors import UserError
from layerbench.families import get_family
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
        (["run", "--model", "minilm-l6", "--tasks", "bbc-news-layer-stats", "--no-metrics"], "nothing to run: every chosen task is label-free"),
        (["run", "--model", "minilm-l6", "--robustness", "noise,fp4"], "unknown robustness variant 'fp4'"),
        (["run", "--model", "minilm-l6", "--robustness", "int8"], "int8 needs the bitsandbytes package and a CUDA GPU"),
        (["run", "--model", "minilm-l6", "--pooling", "max"], "'max' is not one of"),
        (["run", "--model", "minilm-l6", "--tasks", "mteb:NoSuchMtebTask"], "unknown mteb task 'NoSuchMtebTask'"),
        (["validate", "no/such/folder"], "'no/such/folder' does not exist"),
        (["run", "--model", "minilm-l6", "--no-metrics", "--metrics", "anisotropy"], "give --metrics or --no-metrics, not both"),
        (["run", "--model", "minilm-l6", "--metric-samples", "1"], "1 is not in the range x>=2"),
        (["run", "--model", "minilm-l6", "--site", "residual,hidden"], "unknown capture site 'hidden'; use one of residual, normed, mlp-input"),
        (["run", "--model", "minilm-l6", "--address", "auto"], "--address needs --executor ray"),
        (["run", "--model", "minilm-l6", "--tasks", "concept-capitals", "--suite", "quick"], "give --tasks or --suite, not both"),
        (["run", "--model", "minilm-l6", "--protocol", "jin2025"], "unknown protocol 'jin2025'"),
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


def test_every_run_option_is_a_config_field_and_back():
    """`layerbench run` declares its options once more than RunConfig does (click needs them); the two cannot drift apart."""
    from layerbench.cli import run
    from layerbench.run_config import RunConfig

    cli_only = {"quiet", "no_cache", "no_metrics"}  # --no-cache and --no-metrics set the fields cache and metrics
    options = {p.name for p in run.params}
    assert options - cli_only == set(RunConfig.model_fields) - {"cache"}


def test_the_python_api_checks_the_same_config(tmp_path):
    import layerbench
    from layerbench.run_config import RunConfig

    with pytest.raises(UserError, match=r"--limit: Input should be greater than or equal to 2 \(got 1\)"):
        layerbench.run("minilm-l6", tasks=["concept-capitals"], limit=1, output=tmp_path)
    with pytest.raises(UserError, match="unknown pooling 'max'; use one of mean, last, cls"):
        layerbench.run("minilm-l6", pooling="max", output=tmp_path)
    with pytest.raises(UserError, match="no model given"):
        layerbench.run([], output=tmp_path)
    config = RunConfig.of("minilm-l6", tasks="concept-capitals, mteb-lee-sts", sites=["residual", "normed,residual"], output=tmp_path)
    assert config.tasks == ("concept-capitals", "mteb-lee-sts") and config.sites == ("residual", "normed") and config.output == str(tmp_path)
    assert not tmp_path.joinpath("minilm-l6").exists()


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
    sizes = {line.split()[0]: line.split()[2] for line in out.splitlines() if line.startswith(("concept-", "mteb-", "jin2024-"))}
    assert sizes["concept-capitals"] == "492" and sizes["mteb-lee-sts"] == "1225" and sizes["jin2024-cities"] == "network"
    assert sum(name.startswith("concept-") for name in sizes) == 9 and sum(name.startswith("jin2024-") for name in sizes) == 9
    code, out, _ = run_cli(capsys, "validate", str(Path(__file__).resolve().parents[1] / "tasks"))
    assert code == 0 and "all specs valid" in out
    code, out, _ = run_cli(capsys, "list", "metrics")
    assert code == 0 and "anisotropy" in out and "descriptive" in out
    code, out, _ = run_cli(capsys, "list", "families")
    assert code == 0 and [line.split()[0] for line in out.splitlines() if not line.startswith(" ")] == ["backpatch", "consistency", "label-free", "latent-language", "mteb", "probe", "similarity"]
    assert "settings: protocol='layerbench', split='stratified-k-fold', probe='standardized-l2', folds=5" in out and "reads the model (causal LMs only)" in out
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0 and "--batch-size" in out


def test_help_list_and_validate_import_no_torch(tmp_path):
    """The CLI answers at once: these commands never import torch or transformers (benchmarks/bench_cli.py times them)."""
    tasks = Path(__file__).resolve().parents[1] / "tasks"
    code = (
        "import sys\n"
        "from layerbench.cli import main\n"
        f"for argv in (['--help'], ['run', '--help'], ['list', 'models'], ['list', 'tasks'], ['list', 'families'], ['list', 'metrics'], ['validate', {str(tasks)!r}]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules)\n"
        "assert not heavy, f'imported {heavy}'\n"
    )
    # a fresh cache folder: list tasks sizes the tasks (mteb's offline ones too) without importing what the run needs
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, "LAYERBENCH_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_quick_suite_on_both_packaged_models_then_resume_and_overwrite(capsys, tmp_path, quick_run):
    import shutil

    out_dir = tmp_path / "results"
    shutil.copytree(quick_run[0], out_dir)  # the session's quick-suite run (tests/conftest.py), copied: this test writes
    out = quick_run[1]
    assert "8 task(s) run" in out
    df = load_results(out_dir)
    assert set(df["model"]) == {"sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4"}
    assert set(df["task"]) == {"bbc-news-layer-stats", "concept-capitals", "mteb-lee-sts", "similarity-quick"}
    n_metrics = len(list_metrics())
    label_free = df[df.metric.isin([m.name for m in list_metrics()])]
    assert label_free.groupby("model").size().to_dict() == {"sentence-transformers/all-MiniLM-L6-v2": 4 * n_metrics * 7, "smollm2-135m-q4": 4 * n_metrics * 31}
    assert (out_dir / "smollm2-135m-q4" / "metrics" / "bbc-news-layer-stats.parquet").is_file()
    assert (out_dir / "smollm2-135m-q4" / "concept-capitals.parquet").is_file() and (out_dir / "smollm2-135m-q4" / "mteb-lee-sts.parquet").is_file()
    headlines = label_free[label_free.task == "bbc-news-layer-stats"]
    whole_set = headlines[headlines.metric.isin([m.name for m in list_metrics() if m.input_kind == "pooled"])]
    assert (whole_set["n"] == 500).all() and df[df.layer.notna()]["depth"].between(0, 1).all()
    tokens = headlines[headlines.metric == "prompt_entropy"]
    assert (tokens["n"] == 16).all() and (tokens["stderr"] > 0).all()  # the quick suite's metric_samples
    probe = df[(df.task == "concept-capitals") & (df.metric == "accuracy")]
    assert len(probe) == 7 + 31 and probe["value"].between(0, 1).all() and (probe["stderr"] >= 0).all()
    # Layer 0 of a last-token task is one state for every text (the embedding of "."): one class everywhere, each stratified
    # fold's accuracy its class share, equal over the folds; every other layer's accuracy varies over them.
    assert (probe[probe.layer > 0]["stderr"] > 0).all()
    summary = df[(df.task == "concept-capitals") & df.layer.isna()]
    assert set(summary.metric) >= {"peak_layer", "peak_depth", "jumping_layer", "converging_layer", "converging_depth"} and summary["depth"].isna().all()
    lee = df[(df.task == "mteb-lee-sts") & (df.metric == "main_score")]
    assert len(lee) == 7 + 31 and lee["value"].between(-1, 1).all()
    assert df[(df.metric == "anisotropy")]["value"].between(-1, 1).all()
    assert df[df.metric == "dataset_entropy_normalized"]["value"].between(0, 1).all()
    assert df[df.metric == "curvature"]["value"].between(0, np.pi).all()
    positive = df[df.metric.isin(["lidar", "intrinsic_dimension"])]
    # Undefined (NaN) only where every point coincides: layer 0 of a last-token task, the embedding of "." for every text.
    assert positive.value.dropna().gt(0).all() and (positive[positive.value.isna()].layer == 0).all()
    # InfoNCE is a loss, log-sum-exp minus the matching logit: >= 0, and exactly 0 where a layer identifies every view.
    assert df[df.metric == "infonce"]["value"].ge(-1e-9).all() and np.isfinite(df[df.metric == "dime"]["value"]).all()
    manifests = list(out_dir.glob("*/runs/*.json"))
    assert len(manifests) == 2
    manifest = json.loads(manifests[0].read_text())
    assert manifest["status"] == "complete" and manifest["forward_passes"] >= 1
    assert {"config_hash", "environment", "timings_seconds", "model"} <= set(manifest)
    assert manifest["environment"]["packages"]["torch"]
    # The platform the bits belong to, and whether the lock's packages made them.
    assert manifest["environment"]["platform_fingerprint"]["id"] == manifest["environment"]["reproducibility"]["platform"]
    assert manifest["environment"]["lock"]["used"] is True

    # The same config again, the model named by its full name this time:
    # every task is skipped and no forward pass runs.
    code, out, _ = run_cli(capsys, "run", "-m", "sentence-transformers/all-MiniLM-L6-v2", "--suite", "quick", "-o", str(out_dir), "--quiet")
    assert code == 0 and "0 task(s) run, 4 skipped, 0 forward passes" in out

    # Another config over existing results is refused, and the results survive.
    before = (out_dir / "sentence-transformers__all-MiniLM-L6-v2" / "metrics" / "bbc-news-layer-stats.parquet").read_bytes()
    code, _, err = run_cli(capsys, "run", "-m", "minilm-l6", "--suite", "quick", "--limit", "32", "-o", str(out_dir))
    assert code == 2 and "from another config; pass --update to replace what changed, --overwrite to redo everything" in err
    assert (out_dir / "sentence-transformers__all-MiniLM-L6-v2" / "metrics" / "bbc-news-layer-stats.parquet").read_bytes() == before
    code, out, _ = run_cli(capsys, "run", "-m", "minilm-l6", "--suite", "quick", "--limit", "32", "-o", str(out_dir), "--overwrite", "--quiet")
    assert code == 0 and "4 task(s) run" in out
    redone = load_results(out_dir / "sentence-transformers__all-MiniLM-L6-v2")
    # Every row over the task's texts has the new limit (token and view metrics read the suite's 16 sampled texts).
    over_all_texts = redone.metric.isin([m.name for m in list_metrics() if m.input_kind == "pooled"] + ["accuracy", "peak_accuracy"])
    assert over_all_texts.any() and (redone[(redone.task != "mteb-lee-sts") & over_all_texts]["n"] == 32).all()


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
    (tasks / "broken.csv").write_text("words\nno text column yet\n")  # unreadable as this task's data: the run stops there
    write_task(tasks, "b-broken", "broken.csv")
    monkeypatch.setenv("LAYERBENCH_TASKS", str(tasks))
    out_dir = tmp_path / "results"
    code, _, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "a-good,b-broken", "-o", str(out_dir))
    assert code == 2 and "broken.csv' has no field 'text'" in error_lines(err)[-1]
    assert set(load_results(out_dir)["task"]) == {"a-good"}  # the finished task is kept

    (tasks / "broken.csv").write_text("text\nfirst line\nsecond line\nthird line\n")
    code, out, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "a-good,b-broken", "-o", str(out_dir))
    assert code == 0 and "1 task(s) run, 1 skipped" in out
    assert "a-good: already done, skipped" in err
    assert set(load_results(out_dir)["task"]) == {"a-good", "b-broken"}
    # The resumed run's manifest ends complete although its first task was skipped.
    manifests = [json.loads(p.read_text()) for p in out_dir.glob("*/runs/*.json")]
    assert {m["status"] for m in manifests} == {"complete", "failed"}  # the run the missing file stopped says so, and why
    failed = next(m for m in manifests if m["status"] == "failed")
    assert failed["error_task"] == "b-broken" and "broken.csv' has no field 'text'" in failed["error"]


def test_mistakes_the_specs_and_the_model_config_show_are_all_reported_before_any_model_loads(capsys, tmp_path, monkeypatch):
    """A --limit too small for a probe's folds and a layer beyond the model's depth: one line naming both, before any weights load."""
    import layerbench.runner

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(layerbench.runner, "load_checkpoint", no_loading)
    code, _, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "concept-capitals,concept-borders,mteb-lee-sts", "--limit", "4",
                           "--layers", "2,99", "-o", str(tmp_path / "out"))
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: 3 problem(s) found before loading any model")
    assert "--layers asks for layer 99; model 'minilm-l6' has layers 0..6" in lines[0]
    for task in ("concept-capitals", "concept-borders"):
        assert f"task '{task}': --limit 4 leaves at most 2 examples of each of its 2 classes; 5-fold cross-validation needs 5" in lines[0]
    assert not (tmp_path / "out").exists()
    # Their protocol has no folds: the same limit is no problem for it.
    from layerbench.specs import get_task

    jin = get_task("jin2024-cities")
    assert get_family("probe").problems_before_loading(jin, 4) == []


def test_a_killed_runs_manifest_is_marked_interrupted_by_the_next_run(capsys, tmp_path):
    """A run killed mid-way (SIGKILL: it cannot write anything) leaves its manifest "running"; the next run into the folder marks it."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    runs = tmp_path / "out" / "some-model" / "runs"
    runs.mkdir(parents=True)
    host = __import__("socket").gethostname()
    (runs / "killed.json").write_text(json.dumps({"run_id": "killed", "status": "running", "process": {"host": host, "pid": int(gone.stdout)}}))
    (runs / "elsewhere.json").write_text(json.dumps({"run_id": "elsewhere", "status": "running", "process": {"host": "another-host", "pid": 1}}))
    (runs / "alive.json").write_text(json.dumps({"run_id": "alive", "status": "running", "process": {"host": host, "pid": os.getpid()}}))
    code, _, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "bbc-news-layer-stats", "--limit", "8", "--metrics", "anisotropy", "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert "killed.json interrupted" in err
    status = {p.stem: json.loads(p.read_text())["status"] for p in runs.glob("*.json")}
    assert status == {"killed": "interrupted", "elsewhere": "running", "alive": "running"}


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
        ("name: x\nfamily: probe\n", "field 'description': Field required"),
        ("name: Bad Name\nfamily: probe\ndescription: d\ndata: {source: packaged, dataset: bbc-news}\nmetrics: [a]\nmain_score: a\n", "field 'name': String should match pattern"),
        ("name: x\nfamily: probe\ndescription: d\ndata: {source: ftp, path: p}\nmetrics: [a]\nmain_score: a\n", "field 'data'"),
        ("name: x\nfamily: probing\ndescription: d\ndata: {source: packaged, dataset: bbc-news}\nmain_score: a\n", "field 'family': Input should be 'backpatch', 'consistency', 'label-free', 'latent-language', 'mteb', 'probe' or 'similarity'"),
        ("name: x\nfamily: probe\ndescription: d\ndata: {source: packaged, dataset: bbc-news}\nevaluator: {protocol: loo}\nmain_score: a\n", "field 'evaluator.protocol': Input should be 'layerbench' or 'jin2024'"),
        ("name: x\nfamily: probe\ndescription: d\ndata: {source: hub, path: imdb}\nmain_score: a\n", "field 'data.hub.revision': Field required"),
        ("name: x\nfamily: mteb\ndescription: d\ndata: {source: packaged, dataset: bbc-news}\nmain_score: a\n", "field 'data.source': mteb tasks read source mteb, not 'packaged'"),
        ("- just\n- a list\n", "expected a mapping of fields"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_malformed_spec_names_file_and_field_and_exits_2(capsys, tmp_path, monkeypatch, body, message):
    (tmp_path / "broken.yaml").write_text(body)
    code, _, err = run_cli(capsys, "validate", str(tmp_path / "broken.yaml"))
    lines = error_lines(err)
    assert code == 2 and any("broken.yaml" in line and message in line for line in lines[:-1]), err
    # Asked for by name, it is one error line and exit 2; listing the tasks leaves it out with a warning.
    monkeypatch.setenv("LAYERBENCH_TASKS", str(tmp_path))
    code, _, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "x", "-o", str(tmp_path / "out"))
    if "name: x" in body:
        assert code == 2 and len(error_lines(err)) == 1 and message in error_lines(err)[0], err
    code, _, err = run_cli(capsys, "list", "tasks")
    assert code == 0 and "warning: left out, malformed:" in err and message in err


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
    record = manifest["tasks"]["sentences"]["variants"]["default"]
    assert record["metrics"]["sampled_texts"] == 0 and manifest["capture"]["texts_computed"] == 40  # pooled metrics: no extra pass

    # Another choice of metrics is another config: refused, then redone with --update, which then skips it.
    args = ["run", "-m", "minilm-l6", "--tasks", "sentences", "-o", str(out_dir), "--metrics", "lidar,prompt_entropy", "--metric-samples", "8", "--no-cache"]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "holds metrics of 'sentences' from another config" in err
    code, _, err = run_cli(capsys, *args, "--update")
    assert code == 0, err
    code, out, err = run_cli(capsys, *args, "--update", "--quiet")
    assert code == 0 and "0 task(s) run, 1 skipped" in out, (out, err)
    df = load_results(out_dir)
    assert sorted(set(df["metric"])) == ["lidar", "prompt_entropy"]
    assert (df[df.metric == "lidar"]["n"] == 8).all() and (df[df.metric == "prompt_entropy"]["n"] == 8).all()
    manifest = json.loads(max(out_dir.glob("*/runs/*.json"), key=lambda p: p.stat().st_mtime).read_text())
    record = manifest["tasks"]["sentences"]["variants"]["default"]
    assert record["metrics"]["sampled_texts"] == 8 and record["metrics"]["views_per_text"] == 8
    # The only extra forward passes are the 8 x 8 views (a few may repeat); token metrics ride on the pass.
    assert 40 < manifest["capture"]["texts_computed"] <= 40 + 64


def test_validate_reports_every_bad_spec_and_exits_2(capsys, tmp_path):
    (tmp_path / "good.yaml").write_text("name: good\nfamily: probe\ndescription: d\ndata: {source: generator, generator: coinflip}\nmain_score: accuracy\n")
    (tmp_path / "bad.yaml").write_text("name: bad\nfamily: probe\ndescription: d\ndata: {source: generator, generator: coinflip}\nevaluator: {folds: 1}\nmain_score: accuracy\n")
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.yaml").write_text("name: mine\ndescription: d\ntasks: [good, bad, missing-task]\n")
    code, out, err = run_cli(capsys, "validate", str(tmp_path))
    assert code == 2
    lines = error_lines(err)
    assert any("bad.yaml: field 'evaluator.folds'" in line for line in lines)
    assert any("mine.yaml: field 'tasks': unknown task(s) bad, missing-task" in line for line in lines)
    assert lines[-1] == "error: 2 problem(s) in 2 spec file(s)"
    code, out, _ = run_cli(capsys, "validate", str(tmp_path / "good.yaml"))
    assert code == 0


def test_validate_reports_every_problem_of_every_file_in_one_round(capsys, tmp_path):
    """Three mistakes in one file, a missing data file and a one-label data file: all reported by one `validate`."""
    (tmp_path / "three.yaml").write_text("name: Three Mistakes\nfamily: probe\ndata: {source: generator, generator: coinflip}\nevaluator: {folds: 1}\n"
                                         "main_score: accuracy\nlabels: [true]\n")
    (tmp_path / "nofile.yaml").write_text("name: nofile\nfamily: probe\ndescription: d\ndata: {source: local, path: nowhere.csv, label_field: label}\nmain_score: accuracy\n")
    (tmp_path / "one-label.csv").write_text("text,label\nfirst,yes\nsecond,yes\nthird,yes\n")
    (tmp_path / "onelabel.yaml").write_text("name: onelabel\nfamily: probe\ndescription: d\ndata: {source: local, path: one-label.csv, label_field: label}\n"
                                            "main_score: accuracy\n")
    code, _, err = run_cli(capsys, "validate", str(tmp_path))
    lines = error_lines(err)
    assert code == 2 and lines[-1] == "error: 6 problem(s) in 3 spec file(s)", lines
    for expected in ("three.yaml: field 'name': String should match pattern", "three.yaml: field 'description': Field required",
                     "three.yaml: field 'labels': List should have at least 2 items", "three.yaml: field 'evaluator.folds'",
                     "nowhere.csv' does not exist", "its data has a single label 'yes'; a labelled task needs at least two"):
        assert sum(expected in line for line in lines) == 1, (expected, lines)


def test_a_malformed_user_spec_blocks_only_itself(capsys, tmp_path, monkeypatch):
    (tmp_path / "broken.yaml").write_text("name: broken\nfamily: probe\n")
    monkeypatch.setenv("LAYERBENCH_TASKS", str(tmp_path))
    code, out, err = run_cli(capsys, "list", "tasks")
    assert code == 0 and "concept-capitals" in out and "broken" not in out
    assert "warning: left out, malformed:" in err and "broken.yaml: field 'description': Field required" in err
    code, _, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "broken", "-o", str(tmp_path / "out"))
    assert code == 2 and "broken.yaml: field 'description': Field required; " in error_lines(err)[-1]
    from layerbench.specs import get_task

    assert get_task("concept-capitals").family == "probe"  # every other task still resolves


def test_a_task_added_as_a_file_runs_with_no_code_change(capsys, tmp_path, monkeypatch):
    """A user's own probe task: a local CSV and a YAML spec with a prompt template; the noise variant adds rows."""
    rows = ["text,label"] + [f"the number {i} is {'even' if i % 2 == 0 else 'odd'},{'even' if i % 2 == 0 else 'odd'}" for i in range(40)]
    (tmp_path / "parity.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "parity.yaml").write_text(
        "name: parity\nfamily: probe\ndescription: parity words\n"
        "data: {source: local, path: parity.csv, label_field: label}\nlabels: [odd, even]\n"
        "prompt: 'Claim: {text}'\npooling: mean\nevaluator: {folds: 4}\nmain_score: accuracy\n"
    )
    monkeypatch.setenv("LAYERBENCH_TASKS", str(tmp_path))
    out_dir = tmp_path / "results"
    code, out, err = run_cli(capsys, "run", "-m", "minilm-l6", "--tasks", "parity", "--no-metrics", "--robustness", "noise", "-o", str(out_dir), "-q")
    assert code == 0, err
    df = load_results(out_dir)
    assert set(df["subset"]) == {"default", "default+noise"}
    accuracy = df[(df.metric == "accuracy") & (df.subset == "default")].sort_values("layer")["value"].to_numpy()
    assert len(accuracy) == 7 and accuracy.max() > 0.9  # the label word is in the text: every layer can read it
    manifest = json.loads(next(out_dir.glob("*/runs/*.json")).read_text())
    assert manifest["capture"]["texts_computed"] == 80  # 40 texts and their 40 noisy copies, one pass
    assert manifest["tasks"]["parity"]["data"]["source"] == "local"


def test_the_committed_reference_folder_is_never_written_by_accident(capsys, tmp_path, monkeypatch):
    from layerbench.results import REFERENCE_MARKER

    committed = Path(__file__).resolve().parents[1] / "results"
    assert (committed / REFERENCE_MARKER).is_file()  # the committed results are marked as the reference
    reference = tmp_path / "results"
    reference.mkdir()
    (reference / REFERENCE_MARKER).write_text("reference")
    args = ["run", "-m", "minilm-l6", "--tasks", "bbc-news-layer-stats", "--limit", "8", "--metrics", "anisotropy", "-o", str(reference)]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "is a reference results folder" in err and "--reference" in err
    assert sorted(p.name for p in reference.iterdir()) == [REFERENCE_MARKER]  # nothing written
    code, _, err = run_cli(capsys, *args, "--reference", "--quiet")
    assert code == 0, err
    assert (reference / "sentence-transformers__all-MiniLM-L6-v2" / "metrics" / "bbc-news-layer-stats.parquet").is_file()
    # The default output is not the reference folder: run from the repository root, it writes beside it.
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *args[:-2], "--quiet")
    assert code == 0 and (tmp_path / "layerbench-results").is_dir(), err


@pytest.mark.slow
def test_the_gate_passes_an_unchanged_model_and_fails_a_noised_one(quick_run, tmp_path, capsys):
    """The committed gate baseline against a fresh quick run of the same model and code passes on any x86-64
    machine, paired on its items, every score within the measured cross-platform tolerance (bit for bit on the platform
    that made the baseline), with a printed power of at most 0.06 on capitals accuracy and Lee STS; SmolLM2 with weight
    noise of 0.5 x each matrix's sd fails on a headline row."""
    import pandas as pd
    from helpers import platform_tolerance, same_platform

    from layerbench.models.perturb import noised_copy
    from layerbench.models.resolve import resolve_checkpoint

    baseline = Path(__file__).parent.parent / "baselines" / "quick"
    fresh = quick_run[0] / "smollm2-135m-q4"
    code, out, err = run_cli(capsys, "compare", str(baseline), str(fresh), "--report", str(tmp_path / "same.csv"))
    assert code == 0 and out.rstrip().splitlines()[-1].startswith("PASS: no gated row regressed"), out
    assert (tmp_path / "same.summary.txt").read_text() == out  # the report's summary, verdict line last, beside the CSV
    same = pd.read_csv(tmp_path / "same.csv")
    gated = same[same.kind != "diagnostic"]
    assert set(gated.test) <= {"mcnemar", "bootstrap"} and (gated["items"] >= 490).all()  # every gated row paired on its ~500 items
    values = same.rename(columns={"base": "value"}).assign(n_layers=30)
    outside = ~((same.change.abs() <= platform_tolerance(values)) | (same.base.isna() & same.candidate.isna()))
    assert not outside.any(), same[outside].head().to_string()
    if same_platform(baseline):
        assert ((same.change == 0) | same.change.isna()).all()
        assert "smollm2-135m-q4, similarity-quick: unchanged at every layer" in out, out
    moves = same[same.metric.isin(["cka_to_base", "mutual_knn_to_base"])]  # which layers moved: diagnostic, each layer near 1
    assert len(moves) == 2 * 31 and set(moves.kind) == {"diagnostic"} and (moves.candidate > 0.99).all()
    power_table = out[out.index("power:"):].split("\n\n")[0]
    power = {line.split()[0]: float(line.split()[4]) for line in power_table.splitlines()[2:]}
    assert power["concept-capitals"] <= 0.06 and power["mteb-lee-sts"] <= 0.06, out
    noised = noised_copy(Path(resolve_checkpoint("smollm2-135m-q4").path), tmp_path / "smollm2-noised", scale=0.5)
    code, _, err = run_cli(capsys, "run", "-m", str(noised), "--suite", "quick", "--no-metrics", "-o", str(tmp_path / "noised"), "--quiet")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "compare", str(baseline), str(tmp_path / "noised"), "--report", str(tmp_path / "noised.csv"))
    assert code == 1 and "HEADLINE regressions" in out and "(smollm2-135m-q4)" in out and out.rstrip().splitlines()[-1].startswith("FAIL"), out
    report = pd.read_csv(tmp_path / "noised.csv")
    headline = report[report.kind == "headline"]
    assert (headline.verdict == "regression").any() and out.index("regressions") < out.index("power:")
    moved = report[report.metric == "cka_to_base"]
    assert "least similar layers first" in out and (moved.verdict == "changed").sum() >= 10, out