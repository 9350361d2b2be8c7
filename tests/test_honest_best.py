"""The selection-honest best layer (layerbench.honest_best): the cross-fitted pick on constructed curves with known answers,
an independent loop over the halvings, the winner's curse it removes, and the derived result part and summary columns."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import layerbench as lb
from layerbench.honest_best import cross_fit, halving_masks, honest_best, honest_rows, write_honest_best

COMMITTED = Path(__file__).resolve().parents[1] / "results"


def test_a_layer_right_on_every_item_is_picked_every_time_and_scores_exactly_its_value():
    rng = np.random.default_rng(0)
    values = (rng.random((8, 200)) < 0.6).astype(float)  # 8 layers of noise around 0.6
    values[3] = 1.0  # layer 3 right on every item: picked on every half, 1.0 on every held-out half
    values[-1] = 0.0  # the last layer wrong on every item: the gain is exactly 1
    best = honest_best("mean", values, None, True, list(range(8)), halvings=20, resamples=50)
    assert best.layer == 3 and best.layer_share == 1.0 and best.picks == 40
    assert best.value == 1.0 and best.gain == 1.0
    assert best.stderr == 0.0 and best.gain_stderr == 0.0


def test_a_lower_is_better_score_picks_the_smallest():
    values = np.full((5, 40), 0.5)
    values[1] = 0.1
    best = honest_best("mean", values, None, False, [0, 1, 2, 3, 4], halvings=10, resamples=0)
    assert best.layer == 1 and best.value == pytest.approx(0.1)
    assert best.gain == pytest.approx(0.4)  # the last layer's 0.5 less 0.1, signed so that positive is better
    assert np.isnan(best.stderr)


def test_cross_fit_equals_a_loop_over_the_halvings_with_scipy():
    rng = np.random.default_rng(1)
    target = rng.normal(size=60)
    values = target + rng.normal(scale=np.linspace(0.5, 3.0, 6)[:, None], size=(6, 60))  # layer 0 the most correlated
    masks = halving_masks(60, 12, seed=3)
    score, gain, picks = cross_fit("spearman", values, target, True, masks)
    for h, mask in enumerate(masks.astype(bool)):
        held = []
        for pick_on, score_on in ((mask, ~mask), (~mask, mask)):
            on_pick = [stats.spearmanr(layer[pick_on], target[pick_on]).statistic for layer in values]
            chosen = int(np.argmax(on_pick))
            scored = [stats.spearmanr(layer[score_on], target[score_on]).statistic for layer in values]
            held.append((chosen, scored[chosen], scored[chosen] - scored[-1]))
        assert list(picks[h]) == [held[0][0], held[1][0]]
        assert score[h] == pytest.approx((held[0][1] + held[1][1]) / 2, abs=1e-12)
        assert gain[h] == pytest.approx((held[0][2] + held[1][2]) / 2, abs=1e-12)


def test_halvings_split_the_items_in_two_equal_halves():
    masks = halving_masks(101, 30, seed=0)
    assert masks.shape == (30, 101) and set(np.unique(masks)) == {0.0, 1.0}
    assert (masks.sum(axis=1) == 50).all()
    assert len({row.tobytes() for row in masks}) == 30
    assert (halving_masks(101, 30, seed=0) == masks).all()


def test_thirty_noise_layers_and_one_real_layer_the_naive_maximum_is_biased_and_the_honest_estimate_is_not():
    """30 layers at chance (0.5) and one real layer (0.56), 300 items, 150 simulated data sets. The naive maximum overstates
    the true accuracy of the layer it picks; the cross-fitted estimate equals, within its error, the true accuracy of the
    layers it picks, and it does not overstate the best layer's."""
    truth = np.full(31, 0.5)
    truth[17] = 0.56
    rng = np.random.default_rng(7)
    naive_excess, honest_excess, honest_values = [], [], []
    for _ in range(150):
        values = (rng.random((31, 300)) < truth[:, None]).astype(float)
        naive_layer = int(values.mean(axis=1).argmax())
        naive_excess.append(values.mean(axis=1)[naive_layer] - truth[naive_layer])
        score, _, picks = cross_fit("mean", values, None, True, halving_masks(300, 50, seed=int(rng.integers(1 << 30))))
        honest_excess.append(score.mean() - truth[picks].mean())
        honest_values.append(score.mean())
    naive_excess, honest_excess = np.array(naive_excess), np.array(honest_excess)
    def se(x: np.ndarray) -> float:
        return float(x.std(ddof=1) / np.sqrt(len(x)))

    assert naive_excess.mean() > 0.02 and naive_excess.mean() > 5 * se(naive_excess)
    assert abs(honest_excess.mean()) < 3 * se(honest_excess)
    assert np.mean(honest_values) < truth.max()  # half the items pick worse: pessimistic, never optimistic


def _copy_tasks(tmp_path: Path, model: str, names: list[str]) -> Path:
    """A results folder with a few of a committed model's tasks: scores, item records and manifests."""
    source, target = COMMITTED / model, tmp_path / "results" / model
    (target / "items").mkdir(parents=True)
    for name in names:
        shutil.copy(source / f"{name}.parquet", target / f"{name}.parquet")
        if (source / "items" / f"{name}.parquet").exists():  # clustering keeps none
            shutil.copy(source / "items" / f"{name}.parquet", target / "items" / f"{name}.parquet")
    shutil.copytree(source / "runs", target / "runs")
    return tmp_path / "results"


def test_the_derived_part_follows_the_item_records_and_the_summary_reads_it(tmp_path, capsys):
    results = _copy_tasks(tmp_path, "smollm2-135m-q4", ["concept-capitals", "mteb-simlex999", "mteb-bbc-clustering"])
    written = write_honest_best(results)
    assert sorted(Path(p).name for p in written) == ["concept-capitals.parquet", "mteb-simlex999.parquet"]
    assert write_honest_best(results) == []  # unchanged records: nothing recomputed
    table = lb.summary(lb.load_results(results)).set_index("task")
    for task in ("concept-capitals", "mteb-simlex999"):
        row = table.loc[task]
        assert row.honest_best_value <= row.best_value + 1e-12  # the naive maximum is at least the held-out score
        assert row.honest_best_value_low < row.honest_best_value < row.honest_best_value_high
        assert row.honest_gain_low < row.honest_gain < row.honest_gain_high
        assert row.honest_best_value_n > 0 and pd.isna(row.honest_note)
        assert 0 <= row.honest_best_depth <= 1
    clustering = table.loc["mteb-bbc-clustering"]
    assert np.isnan(clustering.honest_best_value) and clustering.honest_best_value_n == 0 and "no item records" in clustering.honest_note
    (results / "smollm2-135m-q4" / "items" / "mteb-simlex999.parquet").unlink()
    write_honest_best(results)
    assert not (results / "smollm2-135m-q4" / "honest" / "mteb-simlex999.parquet").exists()
    assert "its item records are gone" in capsys.readouterr().err


def test_the_honest_rows_do_not_read_the_labels_order_only_the_items():
    """The rows depend on the items' values, not on the order the records are stored in."""
    items = lb.load_items(COMMITTED / "smollm2-135m-q4").query("task == 'concept-borders' and protocol == 'layerbench'")
    scores = lb.load_results(COMMITTED / "smollm2-135m-q4" / "concept-borders.parquet")
    first = honest_rows(items, scores)
    again = honest_rows(items.sample(frac=1.0, random_state=0), scores)
    pd.testing.assert_frame_equal(first.reset_index(drop=True), again.reset_index(drop=True))


def test_committed_results_carry_the_honest_best_of_every_task_with_item_records():
    """A claim kept: every committed item file has its honest rows, made from those very records."""
    for items in sorted(COMMITTED.glob("*/items/*.parquet")):
        assert (items.parents[1] / "honest" / items.name).exists(), f"{items}: no honest rows; run layerbench.honest_best.write_honest_best('results')"
    assert write_honest_best(COMMITTED, check_only=True) == []  # every file in step with its records: nothing to recompute


def test_the_naive_converging_layer_by_fold_is_the_committed_concept_depth_and_the_cross_fitted_one_lies_no_later():
    """An independent computation of the probe family's concept depth from the item records alone; the cross-fitted peak's
    threshold is never above the fold's own maximum, so its converging layer is never later."""
    from layerbench.honest_best import converging_layers_by_fold
    from layerbench.results.items import item_matrix, item_units

    items = lb.load_items(COMMITTED / "smollm2-135m-q4").query("task == 'concept-capitals' and protocol == 'layerbench'")
    layers = sorted(int(layer) for layer in items.layer.unique())
    units = sorted(set(item_units(items)))
    fold = np.array([int(unit.split("@")[1]) for unit in units])
    naive, cross_fitted = converging_layers_by_fold(item_matrix(items, layers, units), fold, layers)
    stored = lb.load_results(COMMITTED / "smollm2-135m-q4" / "concept-capitals.parquet").query("metric == 'converging_layer'").value.iloc[0]
    assert naive.mean() == pytest.approx(stored, abs=1e-12)
    assert (cross_fitted <= naive).all()


def test_an_index_cell_counts_a_layer_as_beating_the_last_only_where_its_interval_lies_above_zero():
    from layerbench.site.index import index_cell

    part = pd.DataFrame({"honest_gain": [0.05, 0.02, 0.0003, -0.01, np.nan], "honest_gain_low": [0.01, -0.01, 0.0001, -0.03, np.nan],
                         "honest_gain_high": [0.09, 0.05, 0.0005, 0.01, np.nan],
                         "gain": [0.06, 0.05, 0.01, 0.0, 0.2]})
    assert index_cell(part, "honest_gain", "count_beyond_zero").value == "1/4"  # +0.0003 lies above 0 but does not show at 3 decimals
    mean = index_cell(part, "honest_gain", "mean", naive_field="gain")
    assert mean.value == pytest.approx(np.mean([0.05, 0.02, 0.0003, -0.01]))
    assert mean.naive == pytest.approx(np.mean([0.06, 0.05, 0.01, 0.0]))  # the naive gain over the same four tasks, not the fifth
