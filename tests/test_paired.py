"""The paired tests of the gate (layerbench.paired): closed forms, an independent recomputation on explicit resamples, and their
false-alarm rate and power on synthetic runs with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, pearsonr, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from layerbench import paired


def _draws(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """The item indices bootstrap_weights counts: the same seeded draw."""
    return np.random.default_rng([seed, n, resamples]).integers(0, n, size=(resamples, n))


def test_weighted_statistics_equal_the_statistic_of_each_explicit_resample():
    """Counts as weights give exactly what scipy and scikit-learn give on the resampled lists, ties (rounded values) included."""
    rng = np.random.default_rng(1)
    n, resamples = 80, 6
    values = np.round(rng.normal(size=(3, n)), 1)  # many ties, as similarities of a coarse model have
    target = np.round(rng.normal(size=n), 1)
    labels = (rng.random(n) < 0.4).astype(float)
    weights, draws = paired.bootstrap_weights(n, resamples), _draws(n, resamples)
    assert weights.sum(axis=1).tolist() == [n] * resamples
    got = {name: paired.weighted_statistic(name, values, None if name == "mean" else (labels if "precision" in name else target), weights)
           for name in ("mean", "spearman", "pearson", "max_average_precision")}
    for b, idx in enumerate(draws):
        for layer in range(3):
            x = values[layer, idx]
            assert got["mean"][b, layer] == pytest.approx(x.mean(), abs=1e-12)
            assert got["spearman"][b, layer] == pytest.approx(spearmanr(x, target[idx])[0], abs=1e-12)
            assert got["pearson"][b, layer] == pytest.approx(pearsonr(x, target[idx])[0], abs=1e-12)
            assert got["max_average_precision"][b, layer] == pytest.approx(average_precision_score(labels[idx], x), abs=1e-12)
            assert paired.weighted_auroc(values[layer], labels > 0, weights)[b] == pytest.approx(roc_auc_score(labels[idx], x), abs=1e-12)
    # Several scorers: the best of their average precisions, as mteb's max_ap.
    scorers = np.stack([values, -values], axis=1)  # [L, 2, N]
    best = paired.weighted_statistic("max_average_precision", scorers, labels, np.ones((1, n)))[0]
    assert best == pytest.approx([max(average_precision_score(labels, v), average_precision_score(labels, -v)) for v in values])


def test_an_auroc_resample_with_one_class_is_nan_and_a_perfect_one_is_1():
    positive = np.arange(6) >= 3
    weights = np.array([[2.0, 2, 2, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 3, 0, 1, 0, 2]])
    got = paired.weighted_auroc(np.arange(6.0), positive, weights)
    assert np.isnan(got[0]) and got[1] == 1.0 and got[2] == 1.0
    assert paired.weighted_auroc(np.zeros(6), positive, weights)[1] == 0.5  # every score tied: a coin


def test_unit_weights_give_the_items_own_statistic_and_scale_and_shift_leave_rank_scores():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2, 50)), rng.normal(size=50)
    ones = np.ones((1, 50))
    assert paired.weighted_statistic("spearman", x, y, ones)[0] == pytest.approx([spearmanr(v, y)[0] for v in x])
    # Spearman is invariant under a monotone map of the values; Pearson under a positive affine one.
    assert paired.weighted_statistic("spearman", np.exp(x), y, ones) == pytest.approx(paired.weighted_statistic("spearman", x, y, ones))
    assert paired.weighted_statistic("pearson", 3 * x + 1, y, ones) == pytest.approx(paired.weighted_statistic("pearson", x, y, ones))


def test_mcnemar_is_the_exact_binomial_tail_of_the_discordant_items():
    base = np.r_[np.ones(40), np.zeros(60)]
    candidate = base.copy()
    assert paired.mcnemar(base, candidate) == (1.0, 1.0, 0, 0)  # nothing changed: no evidence either way
    candidate[:10] = 0  # 10 items lost, 3 won
    candidate[40:43] = 1
    p_worse, p_better, b, c = paired.mcnemar(base, candidate)
    assert (b, c) == (10, 3)
    assert p_worse == pytest.approx(binom.sf(9, 13, 0.5)) and p_better == pytest.approx(binom.sf(2, 13, 0.5))
    assert p_worse == pytest.approx(sum(math.comb(13, k) for k in range(10, 14)) / 2**13)


def test_mcnemar_detectable_is_the_least_loss_the_exact_test_flags():
    alpha = paired.alpha_of(2.0)
    assert alpha == pytest.approx(0.02275, abs=1e-5)
    # No discordant items: m lost items alone give p = 2^-m, so m = 6 (2^-6 = 0.0156 <= 0.0228 < 2^-5).
    assert paired.mcnemar_detectable(64, 0, alpha) == pytest.approx(6 / 64)
    assert paired.mcnemar_detectable(500, 0, alpha) == pytest.approx(6 / 500)
    # With 100 discordant items, the drop needs about z sqrt(100) = 20 items more lost than won.
    reach = paired.mcnemar_detectable(1000, 100, alpha) * 1000
    assert 18 <= reach <= 22 and binom.sf((100 + reach) / 2 - 1, 100, 0.5) <= alpha
    assert paired.mcnemar_detectable(5, 0, alpha) == math.inf  # five items cannot show any drop at this level


def test_holm_adjusts_step_down_and_bootstrap_p_of_identical_runs_is_one():
    assert paired.holm(np.array([0.01, 0.04, 0.03, 0.005])) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert paired.holm(np.array([0.5])) == pytest.approx([0.5])
    worse, better = paired.bootstrap_p(np.zeros((99, 3)))
    assert worse == pytest.approx([1.0] * 3) and better == pytest.approx([1.0] * 3)
    worse, better = paired.bootstrap_p(np.full((99, 2), np.nan))  # a constant layer's correlation: undefined, no evidence
    assert worse == pytest.approx([1.0, 1.0]) and better == pytest.approx([1.0, 1.0])
    worse, _ = paired.bootstrap_p(np.ones((99, 1)))
    assert worse[0] == pytest.approx(1 / 100)  # never a resample without the drop: the least p 99 resamples can give
    assert paired.resamples_for(31, paired.alpha_of(2.0)) >= 31 / paired.alpha_of(2.0)


def test_an_unchanged_quality_rarely_fails_on_one_of_thirty_layers_and_a_real_drop_does():
    """Thirty layers of 500 items, a candidate of the same quality that changes 30 items per layer (each lost or won at random):
    Holm keeps the chance that some layer fails at or below the level; a candidate that loses 6 points at every layer fails on most."""
    alpha = paired.alpha_of(2.0)
    rng = np.random.default_rng(0)
    layers, n = 30, 500
    alarms = 0
    for _ in range(200):
        base = (rng.random((layers, n)) < 0.75).astype(float)
        candidate = base.copy()
        for layer in candidate:  # the null: 30 items change per layer, each lost or won with probability 1/2
            lost = rng.binomial(30, 0.5)
            layer[rng.choice(np.flatnonzero(layer == 1), size=lost, replace=False)] = 0
            layer[rng.choice(np.flatnonzero(layer == 0), size=30 - lost, replace=False)] = 1
        p = np.array([paired.mcnemar(b, c)[0] for b, c in zip(base, candidate)])
        alarms += bool((paired.holm(p) <= alpha).any())
    assert alarms / 200 <= 0.05
    base = (rng.random((layers, n)) < 0.75).astype(float)
    lost = base.copy()
    for layer in lost:
        right = np.flatnonzero(layer == 1)
        layer[rng.choice(right, size=30, replace=False)] = 0  # 30 of 500 items: 6 points
    p = np.array([paired.mcnemar(b, c)[0] for b, c in zip(base, lost)])
    assert (paired.holm(p) <= alpha).mean() > 0.9


def test_the_bootstrap_detectable_drop_follows_the_noise_of_the_difference():
    rng = np.random.default_rng(3)
    drops = rng.normal(0.0, 0.02, size=(4000, 1))
    reach = paired.bootstrap_detectable(drops, 0.0, paired.alpha_of(2.0))[0]
    assert reach == pytest.approx(2 * 0.02, rel=0.1)  # a normal noise: z standard deviations
    assert paired.bootstrap_detectable(np.zeros((100, 1)), 0.0, 0.02, floor=paired.binary_floor(500, 0.02))[0] == pytest.approx(4 / 500)
