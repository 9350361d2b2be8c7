"""Per-layer MTEB: our scores are mteb's scores, from one forward pass for all layers."""
from __future__ import annotations

import numpy as np
import pytest

from layerbench import CaptureRequest, capture_layers
from layerbench.data import load_task_data
from layerbench.data.mteb_tasks import OFFLINE_TASKS, evaluation_items, get_mteb_task, model_meta, prompted_texts, run_mteb
from layerbench.errors import UserError
from layerbench.evaluators.mteb import evaluate_mteb, experiments_are_bootstraps, score_rows
from layerbench.families import EvaluatorContext
from layerbench.specs import get_task


def test_offline_tasks_have_honest_metadata():
    sizes = {name: evaluation_items(get_mteb_task(name, {})) for name in OFFLINE_TASKS}
    assert sizes["LeeDocumentSTS"] == 1225 and sizes["WordSim353"] == 353 and sizes["SimLex999"] == 999
    for name in OFFLINE_TASKS:
        meta = get_mteb_task(name, {}).metadata
        assert meta.name == name and meta.main_score and "==" in meta.dataset["revision"] and meta.reference


def test_an_unknown_mteb_task_is_a_user_error():
    with pytest.raises(UserError, match="unknown mteb task 'NoSuchTask'"):
        get_mteb_task("NoSuchTask", {})
    with pytest.raises(UserError, match="options .* apply only"):
        get_mteb_task("STS12", {"n": 3})


def test_score_rows_flatten_every_score_and_keep_the_spread_of_experiments():
    scores = {"test": [{"accuracy": 0.5, "f1": 0.4, "main_score": 0.5, "hf_subset": "default", "languages": ["eng-Latn"],
                        "nested": {"a": 1.0}, "ap": float("nan"),
                        "scores_per_experiment": [{"accuracy": 0.4}, {"accuracy": 0.6}]}]}
    rows = {row["metric"]: row for row in score_rows(scores)}
    assert set(rows) == {"accuracy", "f1", "main_score", "nested.a"}
    assert np.isclose(rows["accuracy"]["stderr"], 0.1) and np.isnan(rows["f1"]["stderr"])


def test_clustering_experiments_that_are_bootstraps_give_the_standard_error():
    levels = {"Level 0": [0.30, 0.34, 0.38]}
    scores = {"test": [{"v_measure": 0.34, "v_measure_std": float(np.std(levels["Level 0"])), "v_measures": levels, "ami": 0.2,
                        "ami_scores": {"Level 0": [0.1, 0.2, 0.3]}, "main_score": 0.34, "hf_subset": "default"}]}
    rows = {row["metric"]: row for row in score_rows(scores, {("default", "test")}, "v_measure")}
    assert rows["v_measure"]["stderr"] == pytest.approx(0.04) and rows["main_score"]["stderr"] == pytest.approx(0.04)
    assert rows["ami"]["stderr"] == pytest.approx(0.1) and np.isnan(rows["v_measure_std"]["stderr"])
    assert all(np.isnan(row["stderr"]) for row in score_rows(scores))  # experiments that are not bootstraps give none
    assert all(np.isnan(row["stderr"]) for row in score_rows(scores, {("default", "validation")}, "v_measure"))


def test_the_packaged_clustering_resamples_all_its_documents_and_its_rows_carry_the_spread_of_experiments():
    """BBC clustering draws as many documents as it has (a bootstrap): its main score's stderr is mteb's own spread of
    the 10 experiments (v_measure_std, ddof=0) with ddof=1; mteb's default draw sizes are no bootstrap and give none."""
    from mteb.abstasks.clustering import AbsTaskClustering

    spec = get_task("mteb-bbc-clustering")
    data = load_task_data(spec, limit=100)
    pooled = np.random.default_rng(0).normal(size=(1, len(data.texts), 8)).astype(np.float32)
    rows = evaluate_mteb(EvaluatorContext(data, spec, states={"clean": pooled})).rows.set_index("metric")
    assert data.payload.max_documents_per_cluster == len(data.texts) == 100
    assert rows.stderr["main_score"] == rows.stderr["v_measure"] == pytest.approx(rows.value["v_measure_std"] * np.sqrt(10 / 9))
    assert rows.stderr["ami"] == pytest.approx(rows.value["ami_std"] * np.sqrt(10 / 9))
    assert experiments_are_bootstraps(data.payload, 100) and not experiments_are_bootstraps(data.payload, 99)
    assert (AbsTaskClustering.max_fraction_of_documents_to_embed, AbsTaskClustering.max_documents_per_cluster) == (0.04, 16_384)


@pytest.mark.slow
def test_the_clustering_standard_error_is_conservative_against_disjoint_samples(minilm):
    """Does the spread of mteb's bootstrap experiments say how much the v-measure moves on other documents? MiniLM's last
    layer on 22 disjoint samples of 100 of the 2,225 BBC bodies: the spread of their scores (the standard error's
    definition, corrected for the finite corpus) against the mean of each sample's stderr. Measured: 0.050 against 0.087 (layer 1: 0.059 against
    0.080): the main score averages 10 replicates, which a single replicate's spread does not see, so the interval
    is wide by up to 1.75x, not narrow."""
    import random

    from mteb.abstasks.clustering import _evaluate_clustering_bootstrapped

    from layerbench.data.mteb_tasks import _bbc

    _, bodies, topics, _ = _bbc(None, 0, None)
    last = capture_layers(minilm, CaptureRequest(bodies, pooling="mean", max_length=64, cache=False, layers=[6])).pooled[0]
    last = last / np.linalg.norm(last, axis=1, keepdims=True)
    order = np.random.default_rng(1).permutation(len(bodies))
    scores, stderrs = [], []
    for sample in order[: len(order) // 100 * 100].reshape(-1, 100):
        levels = _evaluate_clustering_bootstrapped(last[sample], [[topics[i]] for i in sample], n_clusters=10, cluster_size=100, kmean_batch_size=512,
                                                   max_depth=None, rng_state=random.Random(42), seed=42)[0]["v_measure"]  # as mteb's evaluator calls it
        entry = {"v_measures": levels, "v_measure": float(np.mean(levels["Level 0"])), "hf_subset": "default"}
        v = score_rows({"test": [entry]}, {("default", "test")}, "v_measure")[0]
        scores.append(v["value"])
        stderrs.append(v["stderr"])
    spread = np.std(scores, ddof=1) / np.sqrt(1 - 100 / len(bodies))  # disjoint samples of a finite corpus vary less
    assert spread < np.mean(stderrs) < 3 * spread


@pytest.mark.slow
def test_minilm_last_layer_equals_mteb_on_the_sentence_transformer(minilm):
    """The acceptance test: Lee STS, last layer, mean pooling and normalization = mteb evaluating the model itself."""
    from sentence_transformers import SentenceTransformer

    spec = get_task("mteb-lee-sts").model_copy(update={"evaluator": {"normalize": True}})
    # 150 of the 1,225 pairs, the same seeded subsample on both sides: mteb's STS evaluator encodes every pair's two
    # documents (2,450 encodes for all pairs, 45 s here), and the equality holds on any subsample.
    data = load_task_data(spec, limit=150)
    pooled = capture_layers(minilm, CaptureRequest(data.texts, pooling="mean", max_length=256, cache=False)).pooled
    rows = evaluate_mteb(EvaluatorContext(data, spec, states={"clean": pooled})).rows
    ours = rows[(rows.metric == "main_score") & (rows.layer == 6)]["value"].item()

    model = SentenceTransformer(str(minilm.checkpoint.path), device="cpu")
    assert model.max_seq_length == 256
    theirs = run_mteb(model, get_mteb_task("LeeDocumentSTS", {}, limit=150)).task_results[0].get_score()
    assert abs(ours - theirs) < 1e-4, (ours, theirs)
    assert 0.5 < theirs < 0.9  # a real correlation, not a degenerate one
    per_layer = rows[rows.metric == "main_score"].sort_values("layer")["value"].to_numpy()
    assert len(per_layer) == 7 and per_layer.argmax() == 6


@pytest.mark.slow
def test_every_layer_of_every_offline_task_costs_one_pass_per_unique_text(minilm):
    from layerbench.capture import CaptureStats

    stats, unique = CaptureStats(), set()
    for name in ["mteb-wordsim353", "mteb-bbc-retrieval", "mteb-rt-classification"]:
        spec = get_task(name)
        data = load_task_data(spec, limit=60)
        assert data.texts and not unique & set(data.texts)
        unique |= set(data.texts)
        pooled = capture_layers(minilm, CaptureRequest(data.texts, pooling="mean", max_length=spec.max_length, cache=False), stats=stats).pooled
        rows = evaluate_mteb(EvaluatorContext(data, spec, states={"clean": pooled})).rows
        main = rows[rows.metric == "main_score"]
        assert len(main) == 7 and main["value"].notna().all()
    assert stats.texts_computed == len(unique)  # each text once, for all 7 layers and all of mteb's evaluations


def test_a_layer_score_does_not_depend_on_the_layers_evaluated_before_it():
    # mteb's clustering draws its bootstrap samples from the task's own random
    # state; without reseeding, two identical layers scored differently (0.176 vs
    # 0.209 on SmolLM2 layer 15), so per-layer differences were partly sampling.
    spec = get_task("mteb-bbc-clustering")
    data = load_task_data(spec, limit=100)
    rng = np.random.default_rng(0)
    layer = rng.normal(size=(len(data.texts), 8)).astype(np.float32)
    pooled = np.stack([layer, rng.normal(size=layer.shape).astype(np.float32), layer])  # layers 0 and 2 are the same states
    main = evaluate_mteb(EvaluatorContext(data, spec, states={"clean": pooled})).rows.query("metric == 'main_score'").set_index("layer")["value"]
    assert main[0] == main[2]
    again = evaluate_mteb(EvaluatorContext(data, spec, states={"clean": pooled[[2]]})).rows.query("metric == 'main_score'")["value"].item()
    assert again == main[2]


def _featurize(texts: list[str], dim: int = 64) -> np.ndarray:
    """Hashed character-trigram counts ``[N, dim]``: a deterministic embedding that a prefix changes."""
    import zlib

    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for j in range(len(text) - 2):
            out[i, zlib.crc32(text[j : j + 3].encode()) % dim] += 1
    return out


@pytest.mark.parametrize("name", ["mteb-bbc-retrieval", "mteb-lee-sts", "mteb-bbc-classification"])
def test_model_prompts_prefix_each_text_as_mteb_itself_would(name):
    """With e5's prompt table, our prefixed capture scores what mteb scores on an encoder that prefixes its own inputs."""
    from mteb.models.abs_encoder import AbsEncoder

    from layerbench.models.registry import find_entry

    prompts = find_entry("e5-small-q4").prompts
    spec = get_task(name)
    raw = load_task_data(spec, limit=40)
    data = prompted_texts(raw, prompts)
    expected = {"mteb-bbc-retrieval": {"query": "query: ", "document": "passage: "}}.get(name, {"none": "query: "})
    assert data.provenance["prompts"] == expected
    assert all(t == expected[r["prompt_type"] or "none"] + r["input"] for t, r in zip(data.texts, data.records))
    assert prompted_texts(raw, {"query": "q: "}).texts == [("q: " if r["prompt_type"] == "query" else "") + r["input"] for r in raw.records]

    class PrefixingEncoder(AbsEncoder):  # the independent path: mteb picks the prompt while it evaluates
        model_prompts = prompts
        mteb_model_meta = model_meta("prefixing")

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            prompt = self.model_prompts.get(self.get_prompt_name(task_metadata, prompt_type) or "", "")
            return _featurize([prompt + text for batch in inputs for text in batch["text"]])

    theirs = run_mteb(PrefixingEncoder(), raw.payload).task_results[0].get_score()
    ours = evaluate_mteb(EvaluatorContext(data, spec, states={"clean": _featurize(data.texts)[None]})).rows.query("metric == 'main_score'")["value"].item()
    assert ours == pytest.approx(theirs, abs=1e-12)
    if name != "mteb-bbc-classification":  # one prefix on every text shifts all vectors alike, which a classifier can ignore; cosines cannot
        unprefixed = evaluate_mteb(EvaluatorContext(raw, spec, states={"clean": _featurize(raw.texts)[None]})).rows.query("metric == 'main_score'")["value"].item()
        assert unprefixed != ours  # the prefixes did reach the states
