"""The metric suite a run computes: the registry's functions, row by row, with skips said out loud."""
from __future__ import annotations

import numpy as np
import pytest

import layerbench.metrics as M
from layerbench import UserError
from layerbench.metrics.suite import MetricPlan, evaluate_metrics


def inputs(n: int = 30, layers: int = 4, d: int = 9):
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(layers, n, d)).astype(np.float32)
    tokens = [rng.normal(size=(layers, t, d)) for t in rng.integers(1, 12, size=n)]
    per_prompt = {m.name: np.concatenate([m.per_prompt(t[:, None], [t.shape[1]]) for t in tokens], axis=1) for m in M.list_metrics() if m.input_kind == "tokens"}
    views = rng.normal(size=(layers, n, 8, d))
    return pooled, tokens, per_prompt, views


def test_rows_equal_the_registered_functions():
    pooled, tokens, per_prompt, views = inputs()
    rows, notes = evaluate_metrics(MetricPlan.from_names(None), pooled, per_prompt, views)
    assert set(rows["metric"]) == {m.name for m in M.list_metrics()}
    for info in M.list_metrics():
        got = rows[rows.metric == info.name].sort_values("layer")
        if info.input_kind == "pooled":
            expected = info.fn(pooled)
        elif info.input_kind == "views":
            expected = info.fn(views[:, :, : info.n_views])
        else:
            with pytest.warns(M.MetricWarning):
                expected = info.fn(tokens)
            short = sum(t.shape[1] < (3 if info.name == "curvature" else 2) for t in tokens)
            assert (got["n"] == len(tokens) - short).all() and info.name in notes
            assert (got["stderr"] > 0).all()
        np.testing.assert_allclose(got["value"], expected, rtol=1e-10, err_msg=info.name)
        assert (got["higher_is_better"].isna() if info.higher_is_better is None else got["higher_is_better"] == info.higher_is_better).all()


def test_too_few_texts_skip_a_metric_with_a_note_not_a_nan():
    pooled, _, _, _ = inputs(n=2)
    rows, notes = evaluate_metrics(MetricPlan.from_names(["intrinsic_dimension", "anisotropy"]), pooled, {}, None)
    assert set(rows["metric"]) == {"anisotropy"} and not rows["value"].isna().any()
    assert notes["intrinsic_dimension"] == "skipped: needs at least 3 texts, got 2"


def test_plans():
    plan = MetricPlan.from_names(["lidar", "curvature", "infonce"])
    assert plan.n_views == 8 and set(plan.kernels) == {"curvature"} and plan.needs_sample
    assert not MetricPlan.from_names(["anisotropy"]).needs_sample
    with pytest.raises(UserError, match="names a metric twice"):
        MetricPlan.from_names(["lidar", "lidar"])


def test_a_metric_warning_becomes_a_note_that_does_not_repeat_the_metric_name():
    """The note is keyed by the metric and the run log prints "<task>: <metric>: <note>": the note must not say the name again."""
    pooled = np.random.default_rng(0).normal(size=(3, 10, 8))
    pooled[0] = 1.0  # every point of layer 0 coincides: its intrinsic dimension is undefined
    _, notes = evaluate_metrics(MetricPlan.from_names(["intrinsic_dimension"]), pooled, {}, None)
    assert notes["intrinsic_dimension"] == "1 of 3 layers have fewer than 3 distinct points; their dimension is NaN"
