"""Per-item records: on real MiniLM states every record set recomputes its score row exactly, ids are stable,
a run stores them beside the scores, load_items reads them back, and the gate pairs on them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score

from layerbench.capture import CaptureRequest, capture_layers
from layerbench.cli import main
from layerbench.data import load_task_data
from layerbench.errors import UserError
from layerbench.evaluators.mteb import evaluate_mteb
from layerbench.evaluators.probe import encode_labels, evaluate_probe, probe_splits
from layerbench.families import EvaluatorContext
from layerbench.results import load_items, load_results
from layerbench.results.items import item_ids
from layerbench.specs import get_task


def _statistic(group: pd.DataFrame) -> float:
    """A score recomputed from its items by the plain library functions (not layerbench.paired)."""
    kind = group.statistic.iloc[0]
    if kind == "mean":
        return float(group.value.mean())
    if kind == "spearman":
        return float(spearmanr(group.value, group.target)[0])
    assert kind == "max_average_precision"
    return max(average_precision_score(part.target, part.value) for _, part in group.groupby("scorer"))


def test_item_ids_hash_the_texts_and_stay_unique():
    ids = item_ids(["a", "b", "a"])
    assert ids[0] != ids[1] and ids[2] == ids[0] + "#2" and len(ids[0]) == 16
    assert item_ids(["a"]) == item_ids(["a"]) and item_ids(["a"], ["b"]) != item_ids(["b"], ["a"])  # a pair is ordered


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mteb-lee-sts", "mteb-lee-pair-classification", "mteb-bbc-classification", "mteb-bbc-retrieval", "mteb-simlex999"])
def test_mteb_items_recompute_mtebs_main_score_at_every_layer(minilm, name):
    spec = get_task(name)
    data = load_task_data(spec, limit=120)
    pooled = capture_layers(minilm, CaptureRequest(data.texts, pooling="mean", max_length=spec.max_length, cache=False)).pooled
    scored = evaluate_mteb(EvaluatorContext(data, spec, states={"clean": pooled}))
    main_score = scored.rows.query("metric == 'main_score'").set_index("layer").value
    items = scored.items
    assert items is not None and set(items.layer) == set(range(7)) and set(items.metric) == {"main_score"}
    for layer, group in items.groupby("layer"):
        # mteb rounds retrieval scores to 5 decimals; the others are its floats exactly.
        assert _statistic(group) == pytest.approx(main_score[layer], abs=1e-5 if name == "mteb-bbc-retrieval" else 1e-12), (name, layer)
        assert group.item.nunique() == len(group) // (group["scorer"].nunique() if "scorer" in group else 1)
    # Every layer's main score has a standard error, from mteb's experiments or else from resamples of its items.
    assert scored.rows.query("metric == 'main_score'").stderr.between(1e-4, 0.2).all(), name


def test_a_scores_item_stderr_is_its_bootstrap_spread():
    """1/0 items: the resampled mean's spread is the binomial sqrt(p(1-p)/n); a Spearman correlation's is near
    Bonett and Wright's (1 - r^2) sqrt((1 + r^2/2) / (n - 3)); records of two metrics, or with a gap, give none."""
    from layerbench.results.items import item_stderr

    rng = np.random.default_rng(0)
    n = 400
    hits = (rng.random((2, n)) < np.array([[0.5], [0.9]])).astype(float)
    records = pd.DataFrame({"metric": "accuracy", "statistic": "mean", "layer": np.repeat([0, 1], n), "item": np.tile([f"i{k}" for k in range(n)], 2),
                            "value": hits.ravel(), "target": np.nan})
    errors = item_stderr(records)
    assert item_stderr(records.drop(columns="target")) == errors  # a mean reads no target (retrieval's records have none)
    for layer in (0, 1):
        p = hits[layer].mean()
        assert errors[layer] == pytest.approx(np.sqrt(p * (1 - p) / n), rel=0.1)
    gold = rng.normal(size=n)
    similar = gold + rng.normal(size=n)
    pairs = pd.DataFrame({"metric": "main_score", "statistic": "spearman", "layer": 0, "item": [f"p{k}" for k in range(n)], "value": similar, "target": gold})
    r = spearmanr(similar, gold)[0]
    assert item_stderr(pairs)[0] == pytest.approx((1 - r * r) * np.sqrt((1 + r * r / 2) / (n - 3)), rel=0.15)
    assert item_stderr(pd.concat([records, pairs])) == {} and item_stderr(records.iloc[1:]) == {}


def test_clustering_keeps_no_items(minilm):
    spec = get_task("mteb-bbc-clustering")
    data = load_task_data(spec, limit=60)
    pooled = capture_layers(minilm, CaptureRequest(data.texts, pooling="mean", max_length=spec.max_length, cache=False)).pooled
    assert evaluate_mteb(EvaluatorContext(data, spec, states={"clean": pooled[[3]]}, layers=[3])).items is None


@pytest.mark.slow
def test_probe_items_are_each_items_held_out_prediction(minilm):
    """Each item once (5 folds), from the fold that held it out; the folds' item means are the folds' accuracies, whose
    mean is the accuracy row; the probability is of the true class and agrees with the prediction."""
    spec = get_task("concept-capitals")
    data = load_task_data(spec, limit=100)
    pooled = capture_layers(minilm, CaptureRequest(data.texts, pooling="last", cache=False)).pooled
    scored = evaluate_probe(EvaluatorContext(data, spec, states={"clean": pooled}))
    items, rows = scored.items, scored.rows
    assert items is not None and len(items) == 7 * 100 and set(items.fold) == set(range(5))
    y = encode_labels(data.labels, spec.labels)
    splits = probe_splits(y, spec.settings, 0, [r["group"] for r in data.records])
    ids = np.asarray(item_ids(data.texts))
    for fold, (_, test) in enumerate(splits):
        assert set(items[(items.layer == 3) & (items.fold == fold)].item) == set(ids[test])
    accuracy = rows.query("metric == 'accuracy'").set_index("layer").value
    per_fold = items.groupby(["layer", "fold"]).value.mean().groupby("layer").mean()
    assert np.allclose(per_fold.sort_index().to_numpy(), accuracy.sort_index().to_numpy(), atol=1e-12)
    assert ((items.probability > 0.5) == (items.value == 1)).all()  # two classes: right exactly when the true class is the likelier
    assert (items.prediction == items.target).eq(items.value == 1).all()


@pytest.mark.slow
def test_a_run_stores_items_beside_the_scores_and_the_gate_pairs_on_them(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "-m", "minilm-l6", "--tasks", "concept-capitals,mteb-lee-sts", "--limit", "80", "--no-metrics", "-o", str(out), "--quiet"]
    assert main(args) == 0
    items = load_items(out)
    assert set(items.task) == {"concept-capitals", "mteb-lee-sts"} and (items.run_id == load_results(out).run_id.iloc[0]).all()
    folder = out / "sentence-transformers__all-MiniLM-L6-v2"
    assert sorted(p.name for p in (folder / "items").iterdir()) == ["concept-capitals.parquet", "mteb-lee-sts.parquet"]
    assert set(load_results(out).task) == {"concept-capitals", "mteb-lee-sts"}  # item files are not read as result rows
    capsys.readouterr()
    assert main(["compare", str(out), str(out)]) == 0
    report = capsys.readouterr().out
    assert "by McNemar's exact test" in report and report.rstrip().splitlines()[-1].startswith("PASS: no gated row regressed")
    assert "platform: both on" in report  # one run, one platform fingerprint
    # A corrupt item file is one error line and exit 2, never a crash or a silent unpaired pass.
    (folder / "items" / "mteb-lee-sts.parquet").write_bytes(b"not parquet")
    assert main(["compare", str(out), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: corrupt item file") and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError, match="corrupt item file"):
        load_items(out)


def test_load_items_says_when_a_folder_has_none(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match="no item records"):
        load_items(tmp_path)
    assert load_items(tmp_path, missing_ok=True).empty
    with pytest.raises(UserError, match="no results at"):
        load_items(tmp_path / "missing")
