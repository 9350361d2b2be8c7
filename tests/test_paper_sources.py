"""The papers' network sources, parsed offline from fixtures in their real files' format (tests/fixtures/papers/README.md).

Every url spec is pinned: a fixture (other bytes) is refused with the
"changed upstream" error; with the pin lifted, the parser must read the
fixture as the authors' code reads the real file (prompts, label order,
caps, dropped labels, exemplars). ``validate --online`` is tested the same way.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from layerbench import UserError
from layerbench.cli import main
from layerbench.data import load_task_data, remote
from layerbench.evaluators.backpatch import check_prompts
from layerbench.evaluators.consistency import xie2024_prompts
from layerbench.specs import get_suite, get_task

FIXTURES = Path(__file__).parent / "fixtures" / "papers"
JIN_PROMPT = "According to the sentence, judge the emotion is Positive or Negative."


REPOSITORIES = {"Luckfort/CD": "Luckfort-CD", "zhxieml/internal-consistency": "zhxieml-internal-consistency",
                "edenbiran/HoppingTooLate": "edenbiran-HoppingTooLate", "stanfordnlp/imdb": "stanfordnlp-imdb"}


def _fixture_for(url: str) -> Path:
    folder = next(f for repo, f in REPOSITORIES.items() if f"/{repo}/" in url)
    return FIXTURES / folder / url.rsplit("/", 1)[-1]


@pytest.fixture
def offline_files(monkeypatch):
    """Serve each url source from its fixture instead of the network."""
    monkeypatch.setattr(remote, "download", lambda url, timeout=60: _fixture_for(url).read_bytes())


def unpinned(name: str, **data_update):
    """The registered spec ``name`` with its digests lifted (a fixture is other bytes), plus any data field changes."""
    spec = get_task(name)
    return spec.model_copy(update={"data": spec.data.model_copy(update={"sha256": None, "git_blob": None, **data_update})})


JIN_TASKS = ["jin2024-cities", "jin2024-commonclaim", "jin2024-counterfact", "jin2024-hateeval", "jin2024-stsa", "jin2024-imdb",
             "jin2024-sarcasm", "jin2024-strategyqa", "jin2024-coinflip"]


@pytest.mark.parametrize("name", JIN_TASKS + ["xie2024-boolq", "xie2024-coinflip", "xie2024-prontoqa", "xie2024-proofwriter", "biran2024-two-hop"])
def test_a_pinned_file_that_changed_is_refused(name, offline_files):
    spec = get_task(name)
    assert spec.data.sha256 or spec.data.git_blob  # every url source is pinned by a digest
    assert any(part in spec.data.url for part in ("/4902d58365f7cdc603cfe71c0b627dfbcd1a1125/", "/7ea418b58baec3f4e9989f76937d4593eb2621ed/",
                                                  "/dfc1ec6d199bdfd840f4404e4936a35b0e6dc82e/", "/e6281661ce1c48d982bc483cf8a173c1bbeb5d31/"))
    with pytest.raises(UserError, match="the file changed upstream"):
        load_task_data(spec)


def test_git_object_ids_are_computed_as_git_does():
    # `printf 'hello\n' | git hash-object --stdin`
    assert remote.git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


@pytest.mark.parametrize("name, size, labels, first, placement", [
    ("jin2024-cities", 6, {"0", "1"}, "The city of Lyon is in France.", "prefix"),
    ("jin2024-counterfact", 6, {"0", "1"}, "The mother tongue of Jean Dupont is French.", "prefix"),
    ("jin2024-commonclaim", 6, {"True", "False"}, "Water boils at a lower temperature on a high mountain.", "prefix"),
    ("jin2024-hateeval", 5, {"0", "1"}, "I can not stand people like them, send them all away #example", "suffix"),
    ("jin2024-stsa", 6, {"0", "1"}, "a warm , funny and moving film about growing up .", "suffix"),
    ("jin2024-imdb", 6, {"0", "1"}, "A dull film with no story.", "suffix"),
    ("jin2024-coinflip", 4, {"yes", "no"}, 'A coin is heads up. Ana flips the coin. Ben does not flip the coin. Is the coin still heads up? Note that "flip" here means "reverse".', "suffix"),
    ("jin2024-sarcasm", 4, {"0", "1"}, "local man heroically finishes entire sandwich", "glued"),
])
def test_jin2024_files_parse_with_main_py_prompt(name, size, labels, first, placement, offline_files):
    data = load_task_data(unpinned(name))
    assert len(data) == size and {str(v) for v in data.labels} == labels
    # main.py overwrites every data set's prompt; dataset.py's get_prompt places it per data set.
    expected = {"prefix": f"{JIN_PROMPT} {first}", "suffix": f"{first} {JIN_PROMPT}",
                "glued": f"{JIN_PROMPT}{first} Think carefully according to the sentence. Is there any sarcasm in this sentence? Please answer Yes or No."}[placement]
    assert data.texts[0] == expected


def test_commonclaim_drops_neither_and_caps_each_class_in_file_order(offline_files):
    data = load_task_data(unpinned("jin2024-commonclaim"))
    assert "Neither" not in {str(v) for v in data.labels}
    capped = load_task_data(unpinned("jin2024-commonclaim", per_label_limit=2))
    assert [str(v) for v in capped.labels] == ["True", "False", "True", "False"]  # the first two of each, in file order
    assert capped.texts[2].endswith("The moon is, on average, about 384,000 km from the Earth.")
    assert get_task("jin2024-commonclaim").data.per_label_limit == 3000 and get_task("jin2024-counterfact").data.per_label_limit == 2000
    assert get_task("jin2024-stsa").data.url.endswith("/stsa.binary.train")  # main.py's data path: the 6,920-line training file


def test_strategyqa_appends_the_explanation_without_its_answer(offline_files):
    data = load_task_data(unpinned("jin2024-strategyqa"))
    assert data.labels == [1, 0, 0, 1]
    assert data.texts[0] == f"{JIN_PROMPT}Could a penguin swim across a bathtub? A bathtub is a small body of water. Penguins swim well. Let us think step by step..."


def test_jin2024_label_order_puts_the_first_list_first():
    # dataset.py returns (first list, second list); main.py labels the first 0. The spec's labels list that order.
    firsts = {"jin2024-cities": 1, "jin2024-commonclaim": "True", "jin2024-counterfact": 1, "jin2024-hateeval": 1, "jin2024-stsa": "0",
              "jin2024-imdb": 0, "jin2024-sarcasm": 1, "jin2024-strategyqa": 1, "jin2024-coinflip": "yes"}
    for name, first in firsts.items():
        spec = get_task(name)
        assert spec.labels[0] == first and spec.protocol == "jin2024", name


def _format_icl(examples, context, question):
    """Xie et al.'s prompt, re-written from src/datasets/fewshot_dataset.py's format_icl (use_cot, answer_formatter = identity)."""
    prompt = ""
    for ex in examples:
        prompt += (f"{ex['context']}\nQ: {ex['question']}" if ex["context"] is not None else f"Q: {ex['question']}") + "\n"
        prompt += f"A: {' '.join(ex['chain_of_thought'])} {ex['answer']}" + "\n\n"
    return prompt + f"{context}\nQ: {question}" + "\n" + "A:"


def test_xie2024_files_give_the_authors_prompts(offline_files):
    import json

    boolq = unpinned("xie2024-boolq")
    data = load_task_data(boolq)
    labels, questions, prompts = xie2024_prompts(data, boolq.settings, boolq.name)
    assert list(labels) == [True, False, True] and questions == [0, 1, 2]
    shots = [dict(context=e.context, question=e.question, chain_of_thought=[e.rationale], answer="True" if e.answer else "False") for e in boolq.settings.exemplars]
    assert len(shots) == 4 and shots[0]["question"] == "True or false: Does system of a down have 2 singers?"
    # process_boolq: the passage stripped, "True or false: " + the question capitalized + "?".
    assert prompts[2] == _format_icl(shots, "Botanically, a tomato is a fruit, a berry consisting of the ovary of the flowering plant.", "True or false: Is a tomato a fruit?")

    coin = unpinned("xie2024-coinflip")
    labels, _, prompts = xie2024_prompts(load_task_data(coin), coin.settings, coin.name)
    assert list(labels) == [False, True, True] and len(coin.settings.exemplars) == 8
    assert prompts[0].endswith("A coin is heads up. Ana flips the coin. Ben does not flip the coin.\nQ: True or false: Is the coin still heads up?\nA:")

    pronto = unpinned("xie2024-prontoqa")
    labels, _, prompts = xie2024_prompts(load_task_data(pronto), pronto.settings, pronto.name)
    raw = json.loads((FIXTURES / "zhxieml-internal-consistency" / "prontoqa.json").read_text())
    for prompt, instance in zip(prompts, raw.values()):
        own = [dict(context=v["question"], question=v["query"], chain_of_thought=v["chain_of_thought"], answer=v["answer"])
               for k, v in instance.items() if k.startswith("in_context_example")]
        test = instance["test_example"]
        assert prompt == _format_icl(own, test["question"], test["query"])  # each item's own exemplars
    assert list(labels) == [True, False]


def test_hopping_too_late_rows_keep_their_prompts_and_aliases(offline_files):
    from layerbench.data.two_hop import parse_queries
    from layerbench.families.backpatch import BackpatchSettings
    from layerbench.specs.protocols import get_protocol

    BIRAN = BackpatchSettings(**get_protocol("biran2024").settings)

    data = load_task_data(unpinned("biran2024-two-hop"))
    queries = parse_queries(data.records, "fixture")
    assert [q.composed(capitalize=False) for q in queries] == [
        "the currency of the country whose capital is Paris is", "the spouse of the performer of Imagine is",
        "the headquarters location of the company that produced Some Film is"]
    checks = check_prompts(queries[0], BIRAN)
    assert checks["first_hop"] == ("the country whose capital is Paris is", "e2")
    assert checks["relation_shortcut"] == ("the currency of the country whose capital", "e3")  # evaluate_dataset.py: r2(r1("")) without its last 4 characters
    assert check_prompts(queries[2], BIRAN)["relation_shortcut"][0] == "the headquarters location of the company that produ"  # their [:-4], as written
    assert queries[1].substring_answers("e2") == ["John Lennon", "Lennon"]  # utils.get_answers drops one-letter aliases
    assert check_prompts(queries[0])["composition"][0].startswith("The currency")  # ours capitalizes


def test_skean_suite_is_mteb_eng_v1_without_retrieval_and_the_nine_p2p_tasks():
    import mteb

    suite = get_suite("skean2024-mteb32")
    names = [t.removeprefix("mteb:") for t in suite.tasks]
    assert len(names) == 32 == len(set(names)) and suite.protocols == ["skean2024"] and suite.languages == ["eng"]
    benchmark = [t for t in mteb.get_benchmark("MTEB(eng, v1)").tasks if t.metadata.type != "Retrieval"]
    left_out = {"AmazonPolarityClassification", "ImdbClassification", "ArxivClusteringP2P", "BiorxivClusteringP2P", "MedrxivClusteringP2P",
                "RedditClusteringP2P", "StackExchangeClusteringP2P", "STS22", "SummEval"}
    assert sorted(names) == sorted(t.metadata.name for t in benchmark if t.metadata.name not in left_out)
    # mteb 1.14's MTEB(eng) kept every subset with English in it, as the suite's languages do.
    assert sorted(mteb.get_task("STS17", languages=["eng"]).hf_subsets) == ["en-ar", "en-de", "en-en", "en-tr", "es-en", "fr-en", "it-en", "nl-en"]
    assert all(mteb.get_task(n).metadata.dataset["revision"] for n in names)  # mteb pins every data revision


def test_validate_online_checks_digests_and_labels(capsys, tmp_path, monkeypatch, offline_files):
    good = unpinned("jin2024-cities").model_dump(exclude_none=True)
    good["data"]["sha256"] = hashlib.sha256((FIXTURES / "Luckfort-CD" / "cities.csv").read_bytes()).hexdigest()
    good["name"] = "fixture-cities"
    (tmp_path / "fixture-cities.yaml").write_text(yaml.safe_dump(good))
    code = main(["validate", "--online", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "ok: fixture-cities: https://raw.githubusercontent.com/Luckfort/CD/" in out and "6 items, labels 0, 1" in out
    code = main(["validate", "--online", "--tasks", "jin2024-cities,jin2024-stsa"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("the file changed upstream") == 2 and "2 of 2 network source(s) do not resolve" in err
    code = main(["validate", "--online", "--tasks", "concept-capitals"])
    assert code == 0 and "no network sources to check" in capsys.readouterr().out
    assert main(["validate", "--tasks", "jin2024-cities"]) == 2  # --tasks goes with --online


def test_labels_a_task_declares_are_checked_against_the_file(offline_files):
    spec = unpinned("jin2024-cities").model_copy(update={"labels": ["yes", "no"]})
    with pytest.raises(UserError, match=r"labels \['0', '1'\] are not among the spec's labels"):
        load_task_data(spec)
    assert np.array_equal(sorted(load_task_data(unpinned("jin2024-cities")).labels), [0, 0, 0, 1, 1, 1])
