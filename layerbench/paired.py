"""Paired tests of two runs scored on the same items: did the candidate's score drop beyond what the items' noise allows?

A regression gate scores the base and the candidate on the same items, so
most of the sampling noise of each score cancels in their difference; a
paired test uses that, where an unpaired one (two independent standard
errors) cannot. Pure functions on arrays:

- :func:`mcnemar` -- the exact one-sided McNemar test of two 1/0 outcome vectors (a probe's held-out correctness);
- :func:`bootstrap_weights` and :func:`weighted_statistic` -- a seeded paired bootstrap: items are resampled once, with
  the same draw applied to both runs and every layer, and each statistic (:data:`layerbench.results.items.STATISTICS`)
  is recomputed from the resampled items (as weights: an item drawn k times counts k times, ties get average ranks),
  exactly as the statistic of the resampled list would be;
- :func:`weighted_auroc` -- the same for an AUROC (internal consistency's standard error over questions);
- :func:`bootstrap_p` -- one-sided p values from the bootstrap drops;
- :func:`holm` -- Holm's step-down adjustment, so that the layers of one task together raise a false alarm at most at the level;
- :func:`mcnemar_detectable` and :func:`bootstrap_detectable` -- the smallest drop each test would flag: the gate's power.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

# Resamples behind a standard error drawn by the bootstrap (an item score's, an IC AUROC's over questions, a decision depth's over prompts).
STDERR_RESAMPLES = 1000


def alpha_of(z: float) -> float:
    """The one-sided level of a ``z`` standard-deviation threshold: ``P(N(0, 1) > z)`` (z = 2: 0.0228)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mcnemar(base: np.ndarray, candidate: np.ndarray) -> tuple[float, float, int, int]:
    """The exact McNemar test of paired 1/0 outcomes, one-sided each way.

    Args:
        base: ``[N]`` outcomes (1 right, 0 wrong) of the items in the base run.
        candidate: ``[N]`` outcomes of the same items in the candidate run.

    Returns:
        ``(p_worse, p_better, b, c)``: b items right in the base and wrong in the candidate, c the other way;
        ``p_worse = P(X >= b)`` and ``p_better = P(X >= c)`` for ``X ~ Binomial(b + c, 1/2)`` (1.0 when no item changed).
    """
    from scipy.stats import binom

    base, candidate = np.asarray(base) > 0.5, np.asarray(candidate) > 0.5
    b, c = int((base & ~candidate).sum()), int((~base & candidate).sum())
    if b + c == 0:
        return 1.0, 1.0, b, c
    return float(binom.sf(b - 1, b + c, 0.5)), float(binom.sf(c - 1, b + c, 0.5)), b, c


def mcnemar_detectable(n: int, discordant: int, alpha: float) -> float:
    """The smallest drop of a share of N paired 1/0 outcomes that :func:`mcnemar` flags at ``alpha``, given ``discordant`` changed items.

    A drop of m items needs at least m discordant items (all lost) and has at
    least the ``discordant`` already seen: with D = max(discordant, m) (one
    more when D and m differ in parity), b = (D + m) / 2 lost and c = (D - m) / 2 won,
    the drop counts when ``P(Binomial(D, 1/2) >= b) <= alpha``.

    Returns:
        m / N for the smallest such m (``inf`` when no drop of N items or fewer would count).
    """
    from scipy.stats import binom

    if n <= 0:
        return math.inf
    m = np.arange(1, n + 1)
    d = np.maximum(discordant, m)
    d = d + (d + m) % 2
    ok = (d <= n) & (binom.sf((d + m) // 2 - 1, d, 0.5) <= alpha)
    return float(m[ok][0] / n) if ok.any() else math.inf


def bootstrap_weights(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """``[B, N]`` counts: how often each of N items is drawn in each of B resamples of N with replacement (seeded)."""
    rng = np.random.default_rng([seed, n, resamples])
    draws = rng.integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n), dtype=np.float64)
    np.add.at(weights, (np.repeat(np.arange(resamples), n), draws.ravel()), 1.0)
    return weights


def _tied_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B, N]``: each item's average rank among the weighted copies of ``values`` ``[N]`` (rank 1 the smallest; copies and equal values tie)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1  # [N] group of each sorted position
    sums = np.add.reduceat(weights[:, order], starts, axis=1)  # [B, G] copies per group of equal values
    below = np.cumsum(sums, axis=1) - sums
    ranks = np.empty_like(weights)
    ranks[:, order] = (below + (sums + 1.0) / 2.0)[:, group]
    return ranks


def _weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B]``: Pearson's r of ``x`` and ``y`` (``[B, N]`` or ``[N]``) with row weights ``[B, N]``."""
    total = weights.sum(axis=1)
    mx = (weights * x).sum(axis=1) / total
    my = (weights * y).sum(axis=1) / total
    dx, dy = x - mx[:, None], y - my[:, None]
    cov = (weights * dx * dy).sum(axis=1)
    var = np.sqrt((weights * dx * dx).sum(axis=1) * (weights * dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / var, np.nan)


def _weighted_average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B]``: scikit-learn's ``average_precision_score(labels, scores)`` of each weighted resample (equal scores share a threshold)."""
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    w = weights[:, order]
    positives = np.add.reduceat(w * labels[order], starts, axis=1)  # [B, G] positives at each threshold
    everything = np.add.reduceat(w, starts, axis=1)
    tp, seen = np.cumsum(positives, axis=1), np.cumsum(everything, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
        return (positives * precision).sum(axis=1) / tp[:, -1]


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B]``: scikit-learn's ``roc_auc_score(positive, scores)`` of each weighted resample (equal scores count half).

    Mann-Whitney's U from tied ranks: ``(sum of the positives' ranks - W+ (W+ + 1) / 2) / (W+ W-)`` over the
    weighted copies (``W+``, ``W-``: the positive and negative copies); NaN for a resample with one class only.

    Args:
        scores: ``[N]``. positive: ``[N]`` booleans. weights: ``[B, N]`` copies of each item (:func:`bootstrap_weights`).
    """
    positive = np.asarray(positive, dtype=bool)
    ranks = _tied_ranks(np.asarray(scores, dtype=np.float64), weights)
    w_pos = weights[:, positive].sum(axis=1)
    w_neg = weights[:, ~positive].sum(axis=1)
    u = (weights[:, positive] * ranks[:, positive]).sum(axis=1) - w_pos * (w_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((w_pos > 0) & (w_neg > 0), u / (w_pos * w_neg), np.nan)


def weighted_statistic(statistic: str, values: np.ndarray, target: np.ndarray | None, weights: np.ndarray) -> np.ndarray:
    """A score of each layer recomputed on each weighted resample of its items.

    Args:
        statistic: ``mean``, ``spearman``, ``pearson`` or ``max_average_precision`` (:data:`layerbench.results.items.STATISTICS`).
        values: ``[L, N]`` per-item values of L layers (``max_average_precision``: ``[L, S, N]``, S scorers).
        target: ``[N]`` gold scores or labels (None for ``mean``).
        weights: ``[B, N]`` item counts (:func:`bootstrap_weights`; a row of ones is the statistic of the items as they are).

    Returns:
        ``[B, L]``.
    """
    values = np.asarray(values, dtype=np.float64)
    if statistic == "mean":
        return weights @ values.T / weights.sum(axis=1, keepdims=True)
    if target is None:
        raise ValueError(f"statistic '{statistic}' needs the items' target")
    target = np.asarray(target, dtype=np.float64)
    if statistic == "pearson":
        return np.stack([_weighted_pearson(np.broadcast_to(layer, weights.shape), np.broadcast_to(target, weights.shape), weights) for layer in values], axis=1)
    if statistic == "spearman":
        ranked_target = _tied_ranks(target, weights)
        return np.stack([_weighted_pearson(_tied_ranks(layer, weights), ranked_target, weights) for layer in values], axis=1)
    if statistic == "max_average_precision":
        if values.ndim == 2:
            values = values[:, None, :]
        return np.stack([np.max([_weighted_average_precision(scorer, target, weights) for scorer in layer], axis=0) for layer in values], axis=1)
    raise ValueError(f"unknown statistic '{statistic}'")


def bootstrap_p(drops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p values from bootstrap drops ``[B, ...]`` (positive = the candidate is worse).

    Returns:
        ``(p_worse, p_better)``: ``(1 + #{not drop > 0}) / (B + 1)`` and ``(1 + #{not drop < 0}) / (B + 1)``, each ``[...]``:
        how often a resample shows no drop (no rise); a resample of identical runs shows neither, so both are 1, and
        an undefined (NaN) drop counts as neither.
    """
    b = drops.shape[0]
    # An undefined drop (a score that is NaN on a resample: a constant layer's correlation) is no evidence either way.
    return (1.0 + (~(drops > 0)).sum(axis=0)) / (b + 1.0), (1.0 + (~(drops < 0)).sum(axis=0)) / (b + 1.0)


def bootstrap_detectable(drops: np.ndarray, observed: np.ndarray | float, alpha: float, floor: float = 0.0) -> np.ndarray:
    """The smallest drop a bootstrap test would flag at ``alpha``, given the noise of this pair of runs.

    The bootstrap drops less the observed drop are the difference's noise; a true drop d counts when fewer
    than ``alpha`` of them fall below -d, so d = -(the alpha quantile of the noise). ``floor``: the least drop
    the items can resolve (for 1/0 outcomes, the ``ceil(ln(1/alpha))`` of N items that must be lost for a
    resample to miss them all less often than alpha).

    Args:
        drops: ``[B, ...]`` bootstrap drops. observed: the drop of the items as they are (``[...]``).
    """
    noise = np.asarray(drops) - np.asarray(observed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer whose score is undefined on every resample: NaN, no power to report
        return np.maximum(-np.nanquantile(noise, alpha, axis=0), floor)


def binary_floor(n: int, alpha: float) -> float:
    """:func:`bootstrap_detectable`'s ``floor`` for a share of N 1/0 outcomes: ``ceil(ln(1/alpha)) / N``."""
    return math.ceil(math.log(1.0 / alpha)) / n if n > 0 else math.inf


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p values of m tests: ``max_{j <= i} min(1, (m - j + 1) p_(j))`` in ascending order of p.

    Rejecting where the adjusted p is at most alpha keeps the chance of any false alarm among the m at most alpha.
    """
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def resamples_for(tests: int, alpha: float, least: int = 1000) -> int:
    """How many bootstrap resamples let the smallest attainable p, 1 / (B + 1), pass Holm's first step ``alpha / tests`` with room (twice)."""
    return max(least, math.ceil(2 * tests / alpha))
