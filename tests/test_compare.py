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


def test_the_summary_carries_95_percent_intervals():
    """Normal intervals from the rows' stderr for the best and last layer (the gain's from both), Wilson's for a share."""
    from layerbench.analysis import wilson_interval

    table = summary(rows(stderr=0.01)).iloc[0]
    assert (table.best_value_low, table.best_value_high) == pytest.approx((0.80 - 0.0196, 0.80 + 0.0196), abs=1e-4)
    assert (table.last_value_low, table.last_value_high) == pytest.approx((0.70 - 0.0196, 0.70 + 0.0196), abs=1e-4)
    assert table.gain_high - table.gain_low == pytest.approx(2 * 1.96 * np.hypot(0.01, 0.01), abs=1e-4)
    at_last = summary(rows(stderr=0.01, accuracy=[0.5, 0.6, 0.7, 0.9])).iloc[0]  # the best layer is the last: no gain, and no spread to it
    assert at_last.best_layer == at_last.last_layer and (at_last.gain, at_last.gain_low, at_last.gain_high) == (0.0, 0.0, 0.0)
    assert np.isnan(table.concept_depth_low)  # its summary row has no stderr: no interval, never a made-up one
    # Wilson's interval of 4 of 8 is 0.215..0.785 (textbook value); of 0 of 20 it still has width, up to z^2 / (n + z^2).
    low, high = wilson_interval(np.array([0.5, 0.0, 1.0]), np.array([8, 20, 20]))
    assert low[0] == pytest.approx(0.2152, abs=1e-4) and high[0] == pytest.approx(0.7848, abs=1e-4)
    assert low[1] == 0 and high[1] == pytest.approx(1.96**2 / (20 + 1.96**2), abs=1e-3) and high[2] == pytest.approx(1.0)
    assert np.isnan(wilson_interval(np.array([0.5]), np.array([0]))[0][0])


def test_an_auroc_error_resamples_questions_not_paths():
    """Eight identical paths per question carry no more information than one: a bootstrap over questions gives the
    same error for both (the same questions are drawn), one over paths would shrink it by about sqrt(8)."""
    from layerbench.evaluators.consistency import auroc_with_stderr

    rng = np.random.default_rng(0)
    scores, positive = rng.normal(size=40), rng.random(40) < 0.5
    scores = scores + positive  # a real but imperfect separation
    alone = auroc_with_stderr(scores, positive, np.arange(40), seed=3)
    copies = auroc_with_stderr(np.repeat(scores, 8), np.repeat(positive, 8), np.repeat(np.arange(40), 8), seed=3)
    assert copies == pytest.approx(alone) and 0.02 < alone[1] < 0.15
    # Hanley and McNeil's closed form for independent items agrees with the bootstrap within its own noise.
    a, n1, n0 = alone[0], positive.sum(), (~positive).sum()
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    hanley = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    assert alone[1] == pytest.approx(hanley, rel=0.25)
    assert auroc_with_stderr(np.arange(10.0), np.arange(10) >= 5, np.arange(10), seed=0)[1] == pytest.approx(0.0, abs=1e-12)  # perfect: always 1


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
    # A label-free metric is a diagnostic: its move is reported, never gates; nor does a descriptive metric.
    report = compare_results(base, rows(loss=(0.9, 0.5, 0.3, 0.6)))
    assert report.loc[(report.metric == "infonce") & (report.layer == 3), ["kind", "verdict"]].values.tolist() == [["diagnostic", "changed"]]
    assert (report.verdict != "regression").all()
    assert set(report[report.kind == "headline"].metric) == {"best:accuracy"} and set(report[report.kind == "main"].metric) == {"accuracy"}


def test_a_lower_is_better_main_score_regresses_when_its_best_rises():
    def losses(values):
        frame = rows(accuracy=values)
        return frame.assign(higher_is_better=frame.higher_is_better.where(frame.metric != "accuracy", False))

    report = compare_results(losses([0.5, 0.4, 0.3, 0.35]), losses([0.5, 0.4, 0.38, 0.35]))
    best = report[report.metric == "best:accuracy"].iloc[0]
    assert (best.base, best.candidate, best.verdict) == (0.3, 0.35, "regression")  # the lowest went from 0.30 to 0.35


def test_seed_noise_widens_the_gate_by_the_measured_spread():
    from layerbench.compare import seed_noise

    base, reruns = rows(stderr=np.nan), [rows(accuracy=[0.50, 0.60, 0.80 + d, 0.70], stderr=np.nan) for d in (0.04, -0.04)]
    spread = seed_noise([base, *reruns]).set_index(["metric", "layer"]).seed_sd
    assert spread[("accuracy", 2)] == pytest.approx(0.04) and spread[("accuracy", 0)] == 0.0
    candidate = rows(accuracy=[0.50, 0.60, 0.75, 0.70], stderr=np.nan)  # -0.05: beyond the tolerance, within 2 x sqrt(2) x 0.04 = 0.113
    assert (compare_results(base, candidate).verdict == "regression").any()
    gated = compare_results(base, candidate, noise=seed_noise([base, *reruns]))
    assert (gated.verdict != "regression").all()
    assert gated.loc[gated.metric == "best:accuracy", "detectable"].item() == pytest.approx(2 * np.sqrt(2) * 0.04)  # z x sqrt(2 seed_sd^2)
    with pytest.raises(UserError, match="at least one rerun"):
        seed_noise([base])


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
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "worse"), "--report", str(tmp_path / "report.csv")]) == 1
    out = capsys.readouterr().out
    assert "2 regression" in out and "concept-capitals" in out
    # The report names both sides and their models, lists the headline regression before the per-layer one, and reports its power.
    assert f"base:      {tmp_path / 'base'} (org/m)" in out and f"candidate: {tmp_path / 'worse'} (org/m)" in out
    assert out.index("HEADLINE regressions (1") < out.index("per-layer main-score regressions (1") < out.index("power:")
    assert len(pd.read_csv(tmp_path / "report.csv")) == len(compare_results(load_results(tmp_path / "base"), load_results(tmp_path / "worse")))
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "missing")]) == 2
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "other")]) == 2  # nothing in common
    assert "share no" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "worse"), "--tasks", "concept-borders"]) == 2


def test_the_stored_gate_baseline_passes_against_itself():
    from pathlib import Path

    baseline = Path(__file__).parent.parent / "baselines" / "quick"  # what .github/workflows/checkpoint-gate.yml compares against
    rows = load_results(baseline)
    assert set(rows.task) == {"bbc-news-layer-stats", "concept-capitals", "mteb-lee-sts", "similarity-quick"} and rows.model.nunique() == 1
    assert main(["compare", str(baseline), str(baseline)]) == 0


def test_the_noise_command_stores_the_spread_that_compare_reads(tmp_path, capsys):
    for name, frame in (("base", rows(stderr=np.nan)), ("seed1", rows(accuracy=[0.5, 0.6, 0.84, 0.7], stderr=np.nan)),
                        ("seed2", rows(accuracy=[0.5, 0.6, 0.76, 0.7], stderr=np.nan)), ("worse", rows(accuracy=[0.5, 0.6, 0.75, 0.7], stderr=np.nan))):
        ResultStore(tmp_path / name).write_task(frame, "org/m", None, "concept-capitals", "hash")
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "worse")]) == 1
    assert main(["noise", str(tmp_path / "base"), str(tmp_path / "seed1"), str(tmp_path / "seed2")]) == 0
    assert "seed-noise.csv" in capsys.readouterr().out
    assert len(load_results(tmp_path / "base")) == len(rows())  # the noise file is not read as result rows
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "worse")]) == 0  # -0.05 is within this task's seed noise
    (tmp_path / "base" / "seed-noise.csv").write_text("model,value\n")
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "worse")]) == 2
    assert "lacks column(s)" in capsys.readouterr().err


def test_a_candidate_holding_some_of_the_base_models_is_compared_on_those():
    """`compare results demo-results`: the committed four models against the demo's two; the two are matched by name."""
    base = pd.concat([rows(model="org/a"), rows(model="org/b")])
    report = compare_results(base, rows(model="org/b", accuracy=[0.50, 0.60, 0.70, 0.70]))
    assert set(report.model) == {"org/b"} and (report.verdict == "regression").any()
    with pytest.raises(UserError, match="cannot match models"):
        compare_results(base, rows(model="org/c"))


def outcomes(accuracy=ACCURACY, n: int = 200, seed: int = 0) -> np.ndarray:
    """``[layers, n]`` 1/0 outcomes whose means are ``accuracy`` exactly."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(accuracy), n))
    for layer, a in enumerate(accuracy):
        out[layer, rng.choice(n, size=round(a * n), replace=False)] = 1.0
    return out


def items(values: np.ndarray, model: str = "org/m", task: str = "concept-capitals", ids: list[str] | None = None) -> pd.DataFrame:
    """Item records of a probe's accuracy: one per layer and item."""
    from layerbench.results.items import complete_items

    layers, n = values.shape
    ids = ids or [f"item{i}" for i in range(n)]
    frame = pd.DataFrame({"metric": "accuracy", "statistic": "mean", "layer": np.repeat(np.arange(layers), n), "item": ids * layers,
                          "value": values.ravel(), "target": 1.0, "fold": 0})
    return complete_items(frame, model=model, revision=None, task=task, subset="factual", split="test", run_id="r")


def test_a_paired_gate_sees_a_drop_of_items_that_the_unpaired_one_calls_noise():
    """The same 200 items in both runs: losing 12 of them at layer 2 (accuracy 0.80 -> 0.74) is a regression by McNemar's exact
    test, while the unpaired test (standard errors of 0.03 each) calls it noise; the same items unchanged pass with p = 1."""
    base_outcomes = outcomes()
    lost = base_outcomes.copy()
    lost[2, np.flatnonzero(lost[2] == 1)[:12]] = 0
    base, worse = rows(stderr=0.03), rows(accuracy=[0.50, 0.60, 0.74, 0.70], stderr=0.03)
    unpaired = compare_results(base, worse)
    assert unpaired.loc[(unpaired.metric == "accuracy") & (unpaired.layer == 2), "verdict"].item() == "within-noise"  # 0.06 < 2 sqrt(2) 0.03
    assert set(unpaired.test) == {"unpaired"}
    report = compare_results(base, worse, base_items=items(base_outcomes), candidate_items=items(lost))
    layer2 = report[(report.metric == "accuracy") & (report.layer == 2)].iloc[0]
    assert (layer2.test, layer2.verdict, layer2["items"]) == ("mcnemar", "regression", 200)
    assert layer2.p == pytest.approx(min(1.0, 4 * 0.5**12))  # Holm over the 4 layers: 4 x P(12 of 12 discordant lost)
    best = report[report.metric == "best:accuracy"].iloc[0]
    assert best.test == "bootstrap" and best.verdict == "regression"
    same = compare_results(base, rows(stderr=0.03), base_items=items(base_outcomes), candidate_items=items(base_outcomes))
    assert (same[same.kind != "diagnostic"].verdict == "within-noise").all() and (same[same.test == "mcnemar"].p == 1.0).all()
    # The power of the exact test with no churn: 6 items of 200 (2^-6 <= 0.0228 / 4 layers needs 8).
    assert same.loc[(same.metric == "accuracy") & (same.layer == 2), "detectable"].item() == pytest.approx(8 / 200)


def test_symmetric_churn_passes_and_other_items_stay_unpaired_with_a_note():
    base_outcomes = outcomes()
    churned = base_outcomes.copy()
    for layer in churned:  # 10 items lost and 10 won at every layer: the same accuracy, other items right
        right, wrong = np.flatnonzero(layer == 1), np.flatnonzero(layer == 0)
        layer[right[:10]], layer[wrong[:10]] = 0, 1
    report = compare_results(rows(), rows(), base_items=items(base_outcomes), candidate_items=items(churned))
    assert (report.verdict != "regression").all() and (report[report.test == "mcnemar"].p > 0.5).all()
    other = items(base_outcomes, ids=[f"other{i}" for i in range(200)])
    report = compare_results(rows(), rows(accuracy=[0.50, 0.60, 0.74, 0.70]), base_items=items(base_outcomes), candidate_items=other)
    gated = report[report.kind != "diagnostic"]
    assert set(gated.test) == {"unpaired"} and gated.note.str.startswith("items differ: 0 shared of 200").all()
    assert (gated.verdict == "regression").any()  # unpaired, the drop of 0.06 is ten standard errors of 0.01


def test_the_report_ends_with_a_verdict_line():
    from layerbench.compare import format_report

    passing = format_report(compare_results(rows(), rows()), 0.01, 2.0)
    assert passing.splitlines()[-1].startswith("PASS: no gated row regressed")
    failing = format_report(compare_results(rows(), rows(accuracy=[0.50, 0.60, 0.70, 0.70])), 0.01, 2.0)
    assert failing.splitlines()[-1].startswith("FAIL: 1 headline and 1 per-layer regressions")


def test_a_malformed_spec_in_the_task_folders_does_not_stop_the_reading_of_results(tmp_path, monkeypatch):
    """The main scores come from the installed specs; a broken file in $LAYERBENCH_TASKS blocks only its own task."""
    (tmp_path / "broken.yaml").write_text("name: broken\nfamily: probe\n")  # no data, no description: malformed
    monkeypatch.setenv("LAYERBENCH_TASKS", str(tmp_path))
    table = summary(rows())
    assert table.metric.tolist() == ["accuracy"] and table.best_layer.tolist() == [2]


def test_a_group_without_any_value_has_no_best_layer():
    """A subset every item of which was filtered out has NaN rows at every layer: no best layer, and no crash."""
    empty = rows(accuracy=[np.nan] * 4).assign(subset="none-left")
    best = best_layer(pd.concat([rows(), empty]))
    assert best.subset.tolist() == ["factual"] and best.best_layer.tolist() == [2]


def test_a_base_task_left_with_only_label_free_metrics_is_compared_without_a_main_score():
    """An interrupted run leaves a task's label-free metrics and not its scores: its rows are diagnostics, not a crash."""
    only_metrics = rows(task="concept-borders")
    only_metrics = only_metrics[only_metrics.metric.isin(["infonce", "effective_rank"])].astype({"metric": "string"})
    base = pd.concat([rows().astype({"metric": "string"}), only_metrics], ignore_index=True)
    report = compare_results(base, base.copy())
    assert set(report[report.task == "concept-borders"].kind) == {"diagnostic"}
    assert "headline" in set(report[report.task == "concept-capitals"].kind)
