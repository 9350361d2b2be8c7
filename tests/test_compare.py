"""The regression gate and the pandas helpers, on fabricated result sets with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layerbench.analysis import best_layer, layer_curve, metric_predicts_best_layer, summary
from layerbench.cli import main
from layerbench.compare import compare_results
from layerbench.errors import UserError
from layerbench.results import ResultStore, complete_rows, load_results

ACCURACY = [0.50, 0.60, 0.80, 0.70]  # layers 0..3: best at layer 2, last 0.70


def rows(model: str = "org/m", accuracy=ACCURACY, stderr: float = 0.01, loss=(0.9, 0.5, 0.3, 0.4), task: str = "concept-capitals") -> pd.DataFrame:
    """One probe task: accuracy (higher is better) and a lower-is-better loss per layer, plus a descriptive metric and a summary row."""
    layers = range(len(accuracy))
    scores = pd.DataFrame(
        [dict(metric="accuracy", layer=l, value=a, stderr=stderr, n=200, higher_is_better=True) for l, a in zip(layers, accuracy)]
        + [dict(metric="infonce", layer=l, value=v, stderr=np.nan, n=200, higher_is_better=False) for l, v in zip(layers, loss)]
        + [dict(metric="effective_rank", layer=l, value=10.0 + l, stderr=np.nan, n=200, higher_is_better=None) for l in layers]
        + [dict(metric="converging_depth", layer=None, value=2 / 3, stderr=np.nan, n=200, higher_is_better=None)])
    return complete_rows(scores, model=model, revision=None, task=task, subset="factual", split="test", n_layers=len(accuracy) - 1, run_id="r")


def test_best_layer_curve_and_summary_follow_each_metrics_direction():
    df = rows()
    best = best_layer(df).iloc[0]
    assert (best.metric, best.best_layer, best.best_value, best.last_value) == ("accuracy", 2, 0.80, 0.70)
    assert best.best_depth == pytest.approx(2 / 3) and best.gain == pytest.approx(0.10)
    loss = best_layer(df, metric="infonce").iloc[0]
    assert loss.best_layer == 2 and loss.gain == pytest.approx(0.1)  # lower is better: 0.3 at layer 2 beats 0.4 at the last
    assert best_layer(df, metric="effective_rank").empty  # no direction, no best layer
    curve = layer_curve(df, "concept-capitals", "accuracy")
    assert curve.value.tolist() == ACCURACY and curve.depth.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    with pytest.raises(UserError, match="no per-layer rows of metric 'f1'.*its metrics: accuracy"):
        layer_curve(df, "concept-capitals", "f1")
    table = summary(pd.concat([df, rows(model="org/other", accuracy=[0.5, 0.5, 0.6, 0.9])]))
    assert table.set_index("model").best_layer.to_dict() == {"org/m": 2, "org/other": 3}
    assert table.concept_depth.tolist() == pytest.approx([2 / 3, 2 / 3])


def test_a_label_free_metric_that_tracks_the_score_picks_its_best_layer():
    picks = metric_predicts_best_layer(rows(), "infonce").iloc[0]
    # infonce (lower is better) is lowest at layer 2, where accuracy peaks: it picks the best layer.
    assert picks.picked_layer == 2 and picks.picked_score == 0.80 and picks.last_score == 0.70 and picks.spearman == pytest.approx(1.0)
    descriptive = metric_predicts_best_layer(rows(), "effective_rank").iloc[0]
    assert descriptive.picked_layer == 3 and descriptive.spearman == pytest.approx(0.8)  # ranks 1,2,3,4 vs 1,2,4,3: 1 - 6 x 2 / (4 x 15)


def test_compare_flags_a_known_regression_and_a_known_improvement():
    base = rows()
    worse = rows(accuracy=[0.50, 0.60, 0.70, 0.70])  # layer 2 drops by 0.10, ten standard errors
    report = compare_results(base, worse, tolerance=0.01)
    regressions = report[report.verdict == "regression"]
    assert set(zip(regressions.metric, regressions.layer)) == {("accuracy", 2), ("best:accuracy", pd.NA)}  # a summary row: no layer
    better = compare_results(base, rows(accuracy=[0.50, 0.60, 0.90, 0.70]))
    assert (better.verdict != "regression").all() and set(better[better.verdict == "improvement"].layer) == {2, pd.NA}
    # A lower-is-better metric regresses when it rises.
    report = compare_results(base, rows(loss=(0.9, 0.5, 0.3, 0.6)))
    assert report.loc[(report.metric == "infonce") & (report.layer == 3), "verdict"].item() == "regression"
    # A descriptive metric never gates.
    assert (report[report.metric == "effective_rank"].verdict != "regression").all()


def test_compare_ignores_drops_within_tolerance_or_noise():
    base = rows(stderr=0.05)
    noisy = rows(accuracy=[0.50, 0.60, 0.74, 0.70], stderr=0.05)  # -0.06 < sqrt(2) x 0.05 = 0.071
    report = compare_results(base, noisy, tolerance=0.01)
    assert report.loc[(report.metric == "accuracy") & (report.layer == 2), "verdict"].item() == "within-noise"
    assert report.loc[(report.metric == "best:accuracy"), "verdict"].item() == "regression"  # the best-layer score has no stderr: 0.80 -> 0.74
    tiny = compare_results(rows(), rows(accuracy=[0.50, 0.60, 0.795, 0.70], stderr=0.0), tolerance=0.01)
    assert (tiny.verdict != "regression").all()


def test_compare_command_exit_codes(tmp_path, capsys):
    for name, frame in (("base", rows()), ("same", rows()), ("worse", rows(accuracy=[0.50, 0.60, 0.70, 0.70])), ("other", rows(task="concept-borders"))):
        ResultStore(tmp_path / name).write_task(frame, "org/m", None, frame.task.iloc[0], "hash")
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "same")]) == 0
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "worse"), "--report", str(tmp_path / "report.csv")]) == 1
    out = capsys.readouterr().out
    assert "2 regression" in out and "concept-capitals" in out
    assert len(pd.read_csv(tmp_path / "report.csv")) == len(compare_results(load_results(tmp_path / "base"), load_results(tmp_path / "worse")))
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "missing")]) == 2
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "other")]) == 2  # nothing in common
    assert "share no" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "worse"), "--tasks", "concept-borders"]) == 2


def test_the_stored_gate_baseline_passes_against_itself():
    from pathlib import Path

    baseline = Path(__file__).parent.parent / "baselines" / "quick"  # what .github/workflows/checkpoint-gate.yml compares against
    rows = load_results(baseline)
    assert set(rows.task) == {"bbc-news-layer-stats", "concept-capitals", "mteb-lee-sts"} and rows.model.nunique() == 1
    assert main(["compare", str(baseline), str(baseline)]) == 0
