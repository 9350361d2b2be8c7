"""Tabular sources: text templates, label maps, records, and the two-hop row formats (the user's queries, Biran et al.'s CSV)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from layerbench.data import load_task_data
from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.evaluators.consistency import question_prompts
from layerbench.families.consistency import ConsistencySettings
from layerbench.specs.schema import TaskSpec

QUERY = dict(e1="Tokyo", r1="capital-of", e2="Japan", r2="currency", e3="yen", e2_aliases=["Nippon"], e3_aliases=["Japanese yen"],
             r1_template="{} is the capital of", r1_phrase="the country whose capital is {}", r2_template="The currency of {} is the")


def _spec(data: dict, family: str = "probe", **fields) -> TaskSpec:
    return TaskSpec(name="t", family=family, description="d", data=data, main_score="accuracy", **fields)


def test_text_templates_label_maps_and_records(tmp_path):
    path = tmp_path / "proofs.csv"
    pd.DataFrame({"theory": ["Bob is big.", "Ann is red.", "Cy is odd."], "question": ["Bob is big?", "Ann is blue?", "Cy is even?"],
                  "answer": ["True", "False", "Unknown"], "why": ["stated", "red, not blue", "?"]}).to_csv(path, index=False)
    spec = _spec({"source": "local", "path": str(path), "text_field": "{theory} Statement: {question}", "label_field": "answer",
                  "label_map": {"Unknown": None}, "record_fields": ["why"]})
    data = load_task_data(spec)
    assert data.texts == ["Bob is big. Statement: Bob is big?", "Ann is red. Statement: Ann is blue?"]  # Unknown dropped
    assert data.labels == ["True", "False"] and data.records == [{"why": "stated"}, {"why": "red, not blue"}]
    renamed = load_task_data(_spec({"source": "local", "path": str(path), "text_field": "theory", "label_field": "answer",
                                    "label_map": {"true": "yes", "false": "no", "unknown": "maybe"}}))
    assert renamed.labels == ["yes", "no", "maybe"]  # keys match labels ignoring case
    with pytest.raises(UserError, match="has no field 'passage'"):
        load_task_data(_spec({"source": "local", "path": str(path), "text_field": "{passage} {question}"}))


def test_the_users_two_hop_queries_from_json_lines(tmp_path):
    path = tmp_path / "queries.jsonl"
    other = QUERY | {"e1": "Paris", "e2": "France", "e3": "euro", "e2_aliases": [], "e3_aliases": []}
    path.write_text("\n".join(json.dumps(q) for q in (QUERY, other)))
    spec = _spec({"source": "local", "path": str(path), "row_format": "two-hop-queries"}, family="backpatch")
    data = load_task_data(spec)
    assert data.texts == ["The currency of the country whose capital is Tokyo is the", "The currency of the country whose capital is Paris is the"]
    assert data.records[0]["e3_aliases"] == ["Japanese yen"] and data.labels == ["capital-of>currency"] * 2
    path.write_text(json.dumps(QUERY | {"r2_template": "The currency is"}))
    with pytest.raises(UserError, match=r"query 0 .*r2_template: .*one '\{\}' slot"):
        load_task_data(spec)
    with pytest.raises(UserError, match="unknown row format 'two-hops'"):
        load_task_data(_spec({"source": "local", "path": str(path), "row_format": "two-hops"}, family="backpatch"))


def test_the_hopping_too_late_csv_gives_the_authors_prompts(tmp_path):
    # The columns and cell formats of Biran et al.'s data/two_hop.csv (aliases as Python list text).
    rows = pd.DataFrame({
        "id": [0, 1], "e1": ["Q90", "Q2831"], "r1": ["P1376", "P175"], "e2": ["Q142", "Q5593"], "r2": ["P38", "P26"], "e3": ["Q4916", "Q1234"],
        "e1_aliases": ["['City of Light']", "[]"], "e2_aliases": ["['French Republic', 'FR']", "['Jacko']"], "e3_aliases": ["['EUR']", "[]"],
        "r1_type": ["capital of", "performer"], "r2_type": ["currency", "spouse"],
        "e1_label": ["Paris", "Thriller"], "e2_label": ["France", "Michael Jackson"], "e3_label": ["euro", "Lisa Marie Presley"],
        "r1_template": ["the country whose capital is {}", "the performer of {}"], "r2_template": ["the currency of {}", "the spouse of {}"],
    })
    path = tmp_path / "two_hop.csv"
    rows.to_csv(path)
    data = load_task_data(_spec({"source": "local", "path": str(path), "row_format": "hopping-too-late"}, family="backpatch"))
    theirs = [r2.format(r1).format(e1) + " is" for r1, r2, e1 in zip(rows.r1_template, rows.r2_template, rows.e1_label)]
    assert [t[0].lower() + t[1:] for t in data.texts] == theirs  # their source_prompt, up to the capital first letter
    first = data.records[0]
    assert first["e2_aliases"] == ["French Republic", "FR"] and first["e3_aliases"] == ["EUR"] and data.records[1]["e3_aliases"] == []
    assert first["r1_template"] == "the country whose capital is {} is" and data.labels == ["capital of>currency", "performer>spouse"]
    rows.drop(columns=["e3_label"]).to_csv(path)
    with pytest.raises(UserError, match="not the Hopping Too Late format, it lacks e3_label"):
        load_task_data(_spec({"source": "local", "path": str(path), "row_format": "hopping-too-late"}, family="backpatch"))


def test_spec_exemplars_make_every_item_a_question():
    data = TextDataset(["2 > 1", "1 > 2", "3 > 2"], [True, False, "true"])
    settings = ConsistencySettings(exemplars=[{"question": "5 > 4", "rationale": "5 is more than 4.", "answer": True}])
    labels, questions, prompts = question_prompts(data, settings, "t")
    assert labels.tolist() == [True, False, True] and questions == [0, 1, 2]
    assert prompts[1] == "Q: True or false? 5 > 4\nA: 5 is more than 4. So the answer is True.\n\nQ: True or false? 1 > 2\nA:"
    with pytest.raises(UserError, match="a worked 'rationale' per item, or 'exemplars'"):
        question_prompts(data, ConsistencySettings(), "t")
    # Without exemplars in the spec, the first items of alternating labels are the worked examples.
    worked = TextDataset(data.texts, data.labels, records=[{"rationale": f"r{i}"} for i in range(3)])
    _, questions, prompts = question_prompts(worked, ConsistencySettings(shots=2), "t")
    assert questions == [2] and prompts[0].startswith("Q: True or false? 2 > 1\nA: r0 So the answer is True.\n\nQ: True or false? 1 > 2\nA: r1")


def test_network_intervention_specs_validate():
    from layerbench.specs import get_task

    for name in ("biran2024-two-hop", "xie2024-boolq", "xie2024-proofwriter", "xie2024-prontoqa", "xie2024-coinflip"):
        spec = get_task(name)
        assert spec.data.source == "url" and spec.main_score in ("oracle_fix_rate", "ic_auroc")
    # Xie et al.'s four BoolQ and eight coin-flip exemplars (create_*_examples); ProntoQA and ProofWriter items carry their own.
    assert len(get_task("xie2024-boolq").settings.exemplars) == 4 and len(get_task("xie2024-coinflip").settings.exemplars) == 8
    assert not get_task("xie2024-prontoqa").settings.exemplars
