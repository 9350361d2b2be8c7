"""Task data: the nine offline concept data sets and the generators, deterministic and balanced, with answers we can check."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from layerbench.data import load_task_data
from layerbench.data.generators import arithmetic_comparison, coinflip, syllogisms
from layerbench.errors import UserError
from layerbench.specs import all_tasks, get_task

CONCEPT_TASKS = [name for name in all_tasks() if name.startswith("concept-")]


def test_nine_offline_concept_tasks_three_per_domain():
    domains = Counter(get_task(name).subset for name in CONCEPT_TASKS)
    assert domains == {"factual": 3, "emotional": 3, "inferential": 3}


@pytest.mark.parametrize("name", CONCEPT_TASKS)
def test_concept_data_is_balanced_deterministic_and_labelled_as_the_spec_says(name):
    spec = get_task(name)
    first, second = load_task_data(spec), load_task_data(spec)
    assert first.texts == second.texts and first.labels == second.labels
    counts = Counter(map(str, first.labels))
    assert len(counts) == 2 and len(set(counts.values())) == 1, counts
    assert set(counts) == {str(v) for v in spec.labels}
    assert len(set(first.texts)) >= 0.95 * len(first.texts)  # (Pang-Lee repeats a sentence or two)
    assert first.provenance["licence"] and first.provenance["source"] in ("packaged", "generator")


def test_a_limit_keeps_the_classes_balanced():
    data = load_task_data(get_task("concept-rt-sentiment"), limit=64, seed=3)
    assert Counter(data.labels) == {"fresh": 32, "rotten": 32}


def test_coinflip_answers_are_the_parity_of_the_flips():
    data = coinflip(n=200, people=5, seed=7)
    for text, label in zip(data.texts, data.labels):
        flips = len(re.findall(r"\bflips the coin", text))
        assert text.count("the coin.") == 5 and label == (flips % 2 == 0)


def test_syllogism_answers_follow_the_chain():
    data = syllogisms(n=100, depth=4, shuffle=True, seed=1)
    negated_queries = Counter()
    for text, label in zip(data.texts, data.labels):
        rules = dict(re.findall(r"Every (\w+) is (?:a|not a) (\w+)\.", text))
        negated = set(re.findall(r"Every (\w+) is not a", text))
        name, start = re.search(r"(\w+) is a (\w+)\. True or false", text).groups()
        query_negated, target = re.search(r"True or false: \w+ is (not )?a (\w+)\.", text).groups()
        category, affirmed, hops = start, True, 0
        while category in rules:
            affirmed = category not in negated
            category, hops = rules[category], hops + 1
        assert category == target and hops == 4 and (affirmed != bool(query_negated)) == label
        # No surface cue: one negated rule in every text, the query negated in both classes.
        assert len(negated) == 1 and len(rules) == 8
        negated_queries[(label, bool(query_negated))] += 1
    assert min(negated_queries.values()) >= 15 and len(negated_queries) == 4


# Sentiment and subjectivity are lexical by nature: their bag-of-words baseline is reported in every run, not removed.
LEXICAL = {"concept-rt-sentiment", "concept-rt-subjectivity", "concept-pang-lee-polarity"}


@pytest.mark.parametrize("name", CONCEPT_TASKS)
def test_no_surface_cue_gives_the_label_away(name):
    """A bag of words (unigram and bigram counts, logistic regression) on the probe's own 5 folds stays within 0.1 of chance."""
    import numpy as np

    from layerbench.evaluators.probe import bag_of_words_probe, encode_labels, probe_splits, split_scores

    spec = get_task(name)
    data = load_task_data(spec)
    y = encode_labels(data.labels, spec.labels)
    groups = [r["group"] for r in data.records] if data.records and all("group" in r for r in data.records) else None
    splits = probe_splits(y, spec.settings, seed=0, groups=groups)
    bow = split_scores(np.asarray(data.texts, dtype=object), y, splits, bag_of_words_probe)["accuracy"].mean()
    chance = np.bincount(y).max() / len(y)
    if name in LEXICAL:
        assert bow < 0.9, bow  # reported beside the probe; the probe's selectivity is read against it
    else:
        assert abs(bow - chance) <= 0.1, (name, bow, chance)


def test_paired_statements_stay_balanced_within_their_ring():
    data = load_task_data(get_task("concept-capitals"))
    groups = Counter(r["group"] for r in data.records)
    assert set(groups.values()) == {6} and len(data) == 6 * len(groups) >= 480
    by_group: dict[int, list[tuple[str, bool]]] = {}
    for text, label, record in zip(data.texts, data.labels, data.records):
        by_group.setdefault(record["group"], []).append((text, label))
    for statements in by_group.values():
        parsed = [(re.match(r"The capital of (.+) is (.+)\.$", text).groups(), label) for text, label in statements]
        for side in (0, 1):  # every country and every capital of the ring: once true, once false
            seen = Counter((entities[side], label) for entities, label in parsed)
            assert all(seen[(entity, True)] == seen[(entity, False)] == 1 for entity, _ in seen), statements


def test_arithmetic_answers_are_the_comparison():
    data = arithmetic_comparison(n=100, seed=2)
    for text, label in zip(data.texts, data.labels):
        a, b, c = map(int, re.match(r"(\d+) plus (\d+) is greater than (\d+)\.", text).groups())
        assert label == (a + b > c) and 1 <= abs(a + b - c) <= 5


def test_factual_statements_are_true_exactly_when_labelled_true():
    capitals = load_task_data(get_task("concept-capitals"))
    truth = dict(zip(capitals.texts, capitals.labels))
    assert truth["The capital of France is Paris."] is True and truth["The capital of Japan is Tokyo."] is True
    cities = load_task_data(get_task("concept-city-in-state"))
    assert dict(zip(cities.texts, cities.labels))["Chicago is a city in Illinois."] is True


@pytest.mark.parametrize("options, message", [({"n": 3}, "even number"), ({"people": 0}, "people must be"), ({"colour": "red"}, "bad options")])
def test_bad_generator_options_are_user_errors(options, message):
    from layerbench.data.generators import load_generated

    with pytest.raises(UserError, match=message):
        load_generated("coinflip", options)


def test_builders_blame_the_spec_only_for_options_that_do_not_fit():
    from layerbench.data.builders import Builders

    builders: Builders[int] = Builders("thing")

    @builders.register("double")
    def double(n: int = 1) -> int:
        return 2 * n

    @builders.register("broken")
    def broken() -> int:
        return len(None)  # a bug inside a builder, not a bad option

    assert builders.build("double", {"n": 4}) == 8 and list(builders) == ["broken", "double"]
    with pytest.raises(UserError, match="unknown thing 'triple'; known: broken, double"):
        builders.build("triple", {})
    with pytest.raises(UserError, match="bad options"):
        builders.build("double", {"m": 1})
    with pytest.raises(TypeError):
        builders.build("broken", {})


def test_a_family_added_as_one_module_runs_a_task_added_as_one_file(tmp_path, monkeypatch):
    """The README's worked example: tests/fixtures/families/knn_family.py registers `knn`; one YAML file makes a task of it."""
    import importlib

    import layerbench
    from layerbench.families import all_families, get_family, registry

    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))  # the registration below ends with the test
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fixtures" / "families"))
    module = importlib.import_module("knn_family")
    assert get_family("knn") is module.FAMILY and "knn" in all_families()
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "knn-capitals.yaml").write_text(
        "name: knn-capitals\nfamily: knn\ndescription: capitals, by nearest neighbours\n"
        "data: {source: packaged, dataset: capitals-true-false}\nlabels: [false, true]\n"
        "pooling: last\nevaluator: {k: 3}\nmain_score: knn_accuracy\n"
    )
    monkeypatch.setenv("LAYERBENCH_TASKS", str(tasks))
    layerbench.run("minilm-l6", tasks=["knn-capitals"], limit=40, metrics=[], output=tmp_path / "results")
    rows = layerbench.load_results(tmp_path / "results")
    accuracy = rows[rows.metric == "knn_accuracy"].sort_values("layer")
    assert accuracy.layer.tolist() == list(range(7)) and accuracy.value.between(0, 1).all() and (accuracy.n == 40).all()
    assert layerbench.best_layer(rows).metric.tolist() == ["knn_accuracy"]  # the spec's main score, read like any other


def evaluate_toy2025(context):
    """The made-up protocol's own function: the probe's rows under the protocol's settings, and a row saying how many folds it used."""
    import pandas as pd

    from layerbench.evaluators.probe import evaluate_probe
    from layerbench.results.rows import summary_row

    scored = evaluate_probe(context)
    marker = summary_row("toy2025_folds", context.settings.folds, n=len(context.data), higher_is_better=None, subset=context.spec.subset)
    return scored.__class__(pd.concat([scored.rows, pd.DataFrame([marker])], ignore_index=True), scored.items)


def test_a_protocol_added_to_a_family_from_outside_runs_with_its_own_function_site_and_settings(tmp_path, monkeypatch):
    """A paper's protocol for an existing family is one record (site, pooling, settings, reference, function) added from any
    module: the family's settings accept its name, --protocol runs its function, and its rows and files carry it."""
    import layerbench
    from layerbench.families import Protocol, add_protocol, get_family, registry
    from layerbench.specs.protocols import resolve_protocol, variant_suffix

    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))  # the protocol added below ends with the test
    toy = add_protocol("probe", Protocol("toy2025", site="normed", pooling="mean", settings={"folds": 3}, reference="a made-up paper",
                                         evaluator=f"{__name__}:evaluate_toy2025"))
    assert toy.family == "probe" and toy.settings == {"folds": 3, "protocol": "toy2025"}
    assert resolve_protocol("toy2025", "probe") is toy and resolve_protocol("toy2025", "mteb") is None and variant_suffix("toy2025", "normed") == "@toy2025"
    assert get_family("probe").settings(protocol="toy2025").protocol == "toy2025"
    with pytest.raises(ValueError, match="Input should be 'layerbench', 'jin2024' or 'toy2025'"):
        get_family("probe").settings(protocol="toy2026")
    layerbench.run("minilm-l6", tasks=["concept-capitals"], protocols=["layerbench", "toy2025"], limit=60, metrics=[], output=tmp_path / "results")
    rows = layerbench.load_results(tmp_path / "results")
    toy_rows = rows[rows.protocol == "toy2025"]
    assert set(toy_rows.site) == {"normed"} and toy_rows[toy_rows.metric == "toy2025_folds"].value.tolist() == [3.0]
    assert (tmp_path / "results" / "sentence-transformers__all-MiniLM-L6-v2" / "concept-capitals@toy2025.parquet").is_file()
    ours = rows[(rows.protocol == "layerbench") & (rows.metric == "accuracy")]
    assert len(ours) == 7 and "toy2025_folds" not in set(rows[rows.protocol == "layerbench"].metric)


def test_a_protocol_made_of_settings_alone_runs_them_with_no_code_of_its_own(tmp_path, monkeypatch):
    """A protocol is its settings: one added with another split (probe) or another answer rule, prompt case and first layer
    (back-patching), and no function, changes what the family's own evaluator does; nothing outside its record names it."""
    import layerbench
    from layerbench.data.two_hop import TwoHopQuery
    from layerbench.evaluators.backpatch import answer_check, check_prompts, layer_pairs
    from layerbench.evaluators.probe import probe_splits
    from layerbench.families import Protocol, add_protocol, get_family, registry

    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))  # the protocols added below end with the test
    add_protocol("probe", Protocol("toy2026", settings={"split": "single-split", "test_size": 0.5, "repeats": 2}))
    add_protocol("backpatch", Protocol("toy2027", settings={"answer_match": "substring", "prompt_case": "as-written", "first_layer": 2}))

    toy, ours = get_family("probe").settings(protocol="toy2026"), get_family("probe").settings()
    assert (toy.split, toy.test_size, toy.repeats, toy.probe) == ("single-split", 0.5, 2, "standardized-l2")
    y = np.repeat([0, 1], 30)
    assert [len(test) for _, test in probe_splits(y, toy)] == [30, 30] and [len(test) for _, test in probe_splits(y, ours)] == [12] * 5
    layerbench.run("minilm-l6", tasks=["concept-capitals"], protocols=["layerbench", "toy2026"], limit=60, metrics=[], output=tmp_path / "results")
    rows = layerbench.load_results(tmp_path / "results")
    accuracy = rows[(rows.metric == "accuracy") & rows.layer.notna()].pivot(index="layer", columns="protocol", values="value")
    assert accuracy.shape == (7, 2) and not np.allclose(accuracy["toy2026"], accuracy["layerbench"])

    toy_bp, ours_bp = get_family("backpatch").settings(protocol="toy2027"), get_family("backpatch").settings()
    query = TwoHopQuery(e1="Imagine", r1="performer", e2="John Lennon", r2="spouse", e3="Yoko Ono", r1_template="the performer of {} is", r1_phrase="the performer of {}",
                        r2_template="the spouse of {} is", e3_aliases=["Yoko"])
    assert check_prompts(query, toy_bp)["first_hop"][0] == "the performer of Imagine is" != check_prompts(query, ours_bp)["first_hop"][0]
    for settings, verdict in ((toy_bp, True), (ours_bp, False)):
        names_of, found = answer_check(settings)
        assert found(" Yokohama, Japan", names_of(query, "e3")) is verdict  # "Yoko" inside a longer word: a substring, not a word
    assert min(min(pair) for pair in layer_pairs(4, toy_bp)) == 2 and min(min(pair) for pair in layer_pairs(4, ours_bp)) == 0


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_lists_every_task_and_carries_the_leaderboard(tmp_path):
    """tasks/ and leaderboard/ live at the top of the repository; the wheel carries both inside the package."""
    import os
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(root)],
                   check=True, capture_output=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    wheel = next((tmp_path / "dist").glob("layerbench-*.whl"))
    zipfile.ZipFile(wheel).extractall(tmp_path / "site-packages")
    specs = sorted(p.stem for p in (root / "tasks").glob("*.yaml"))
    parts = sorted(str(p.relative_to(root / "leaderboard")) for p in (root / "leaderboard").rglob("*") if p.is_file())
    script = ("import layerbench, layerbench.site.view as s; from layerbench.specs import all_tasks; from layerbench.config import shipped_folder; "
              "print(layerbench.__file__); print(sorted(all_tasks())); print(sorted(str(p.relative_to(s.PARTS)) for p in s.PARTS.rglob('*') if p.is_file()))")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site-packages"), "LAYERBENCH_TASKS": ""}).stdout.splitlines()
    assert out[0].startswith(str(tmp_path / "site-packages"))  # the wheel's copy, not this checkout
    assert eval(out[1]) == specs and len(specs) >= 30
    assert eval(out[2]) == parts and "schema.yaml" in parts and "templates/index.html" in parts
