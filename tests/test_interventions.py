"""Interventions: the logit lens, back-patching and internal consistency, on SmolLM2 and on closed-form cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import check_backpatch_rows, check_consistency_rows

from layerbench.data import load_packaged
from layerbench.data.two_hop import TwoHopQuery, mentions, parse_queries
from layerbench.errors import UserError
from layerbench.evaluators.backpatch import CHECKS, answer_check, check_prompts, layer_pairs, queries_of, run_checks, settled, sweep_query
from layerbench.evaluators.consistency import calibrated_answers, cut_path, internal_consistency
from layerbench.families.backpatch import BackpatchSettings
from layerbench.models.generation import generate
from layerbench.models.residual import lens_logits, lens_statistics, patch_positions, record_layers

QUERY = dict(e1="Tokyo", r1="capital-of", e2="Japan", r2="currency", e3="yen", e2_aliases=["Nippon"], e3_aliases=["Japanese yen"],
             r1_template="{} is the capital of", r1_phrase="the country whose capital is {}", r2_template="The currency of {} is the")


def _ids(handle, text):
    return handle.tokenizer(text, return_tensors="pt")["input_ids"]


def test_lens_at_the_last_layer_is_the_models_own_output(smollm):
    ids = _ids(smollm, "The capital of France is")
    with torch.no_grad(), record_layers(smollm, [smollm.n_layers]) as recorded:
        logits = smollm.model(input_ids=ids).logits[0]
    lens = lens_logits(smollm, recorded[smollm.n_layers][0][0])
    assert (lens - logits).abs().max().item() < 1e-4
    assert smollm.tokenizer.decode(lens[-1].argmax()) == " Paris"


def test_recorded_layers_are_the_raw_residual_stream(smollm):
    ids = _ids(smollm, "A coin is heads up.")
    layers = [0, 5, smollm.n_layers]
    with torch.no_grad(), record_layers(smollm, layers) as recorded:
        hidden = smollm.model(input_ids=ids, output_hidden_states=True).hidden_states
    for layer in layers[:2]:
        assert torch.equal(recorded[layer][0], hidden[layer])
    # Hugging Face's last entry carries the final norm; ours is the raw stream, and the norm of ours is theirs.
    raw = recorded[smollm.n_layers][0]
    assert not torch.allclose(raw, hidden[-1])
    torch.testing.assert_close(smollm.anatomy.final_norm(raw), hidden[-1])


def test_lens_statistics_rank_prob_and_entropy(smollm):
    ids = _ids(smollm, "The capital of France is")
    layers = list(range(smollm.n_layers + 1))
    with torch.no_grad(), record_layers(smollm, layers) as recorded:
        smollm.model(input_ids=ids)
    states = torch.stack([recorded[layer][0][0, -1:] for layer in layers])  # [L+1, 1, D]
    paris = smollm.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    stats = lens_statistics(smollm, states, torch.tensor([paris]))
    assert stats["rank"][-1, 0] == 1 and stats["rank"][0, 0] > 100  # the answer appears only in late layers
    assert torch.all((stats["prob"] >= 0) & (stats["prob"] <= 1))
    vocab = smollm.anatomy.unembedding.weight.shape[0]
    assert torch.all((stats["entropy"] >= 0) & (stats["entropy"] <= np.log(vocab) + 1e-3))
    probs = torch.softmax(lens_logits(smollm, states[-1]), -1)[0, paris]
    assert stats["prob"][-1, 0] == pytest.approx(probs.item(), rel=1e-5)


def test_patching_a_layers_own_state_back_reproduces_the_unpatched_generation(smollm):
    prompt = "The currency of the country whose capital is Tokyo is the"
    unpatched = generate(smollm, [prompt], max_new_tokens=8)[0][0]
    last = len(_ids(smollm, prompt)[0]) - 1
    texts = sweep_query(smollm, prompt, {"e1-last": 7, "prompt-last": last}, [(3, 3), (15, 15), (30, 30)], names=[], max_new_tokens=8, batch_size=2)
    assert len(texts) == 6 and set(texts.values()) == {unpatched}


def test_patching_france_into_germany_moves_the_answer_towards_paris(smollm):
    france, germany = _ids(smollm, "The capital of France is"), _ids(smollm, "The capital of Germany is")
    assert france.shape == germany.shape
    paris, berlin = (smollm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" Paris", " Berlin"))
    layers = list(range(smollm.n_layers + 1))
    with torch.no_grad(), record_layers(smollm, layers) as recorded:
        smollm.model(input_ids=france)
    with torch.no_grad():
        clean = smollm.model(input_ids=germany).logits[0, -1]
    margin = lambda logits: (logits[paris] - logits[berlin]).item()
    assert margin(clean) < 0  # unpatched: Berlin
    shifts = {}
    for layer in (25, 27, 29):  # at layer 20 the shift is still ~0: later layers read "Germany" from its own position
        with torch.no_grad(), patch_positions(smollm, torch.tensor([layer]), germany.shape[1] - 1, recorded[layer][0][:, -1]):
            patched = smollm.model(input_ids=germany).logits[0, -1]
        shifts[layer] = margin(patched) - margin(clean)
    assert all(shift > 1.0 for shift in shifts.values()), shifts
    with torch.no_grad(), patch_positions(smollm, torch.tensor([29]), germany.shape[1] - 1, recorded[29][0][:, -1]):
        assert smollm.model(input_ids=germany).logits[0, -1].argmax().item() == paris


def test_a_prompt_continues_the_same_alone_and_in_a_left_padded_batch(smollm):
    short, long = "The capital of France is", "The people of the country whose capital is Tokyo are called"
    alone = generate(smollm, [short], max_new_tokens=6)[0][0]
    batched = generate(smollm, [long, short], max_new_tokens=6, batch_size=2)
    assert batched[1][0] == alone and batched[0][0] == generate(smollm, [long], max_new_tokens=6)[0][0]


@pytest.mark.slow
def test_checks_run_each_distinct_prompt_once_and_give_every_query_its_own_prompts_verdict(smollm):
    # Packaged chains through one country share its first hop; the checks generate a shared prompt once, in
    # length-sorted batches, and each query must get the verdict of its own prompts generated one by one.
    packaged = queries_of(load_packaged("two-hop-queries", {"seed": 0}), "test")
    by_first_hop: dict[str, list[TwoHopQuery]] = {}
    for q in packaged:
        by_first_hop.setdefault(check_prompts(q)["first_hop"][0], []).append(q)
    shared = [group[:2] for group in by_first_hop.values() if len(group) > 1][:4]
    queries = [q for pair in shared for q in pair] + packaged[:4]
    assert len(shared) == 4
    settings = BackpatchSettings()
    names_of, found = answer_check(settings)
    checks = run_checks(smollm, queries, settings)
    for check in ("first_hop", "relation_shortcut"):  # the most shared prompts (529 and 24 distinct of 794)
        alone = [found(generate(smollm, [prompt], settings.max_new_tokens)[0][0], names_of(q, entity))
                 for q, (prompt, entity) in ((q, check_prompts(q)[check]) for q in queries)]
        assert checks[check].tolist() == alone, check
    assert {bool(v) for check in CHECKS for v in checks[check]} == {True, False}


def test_samples_from_a_shared_prefill_continue_as_a_lone_prompt_does(smollm):
    # K copies per prompt share one prefill (left-padded batch of unequal prompts); greedily, every copy is the lone continuation.
    prompts = ["The capital of France is", "Q: True or false? Two plus two is four, and this prompt is much longer than the other one.\nA:"]
    lone = generate(smollm, prompts, max_new_tokens=8)
    shared = generate(smollm, prompts, max_new_tokens=8, num_return_sequences=3)
    assert shared == [[text] * 3 for (text,) in lone]


def test_paths_run_on_the_prompt_cache_give_the_full_texts_states(smollm):
    from layerbench.models.residual import continuation_states, last_token_states

    prefix = "Q: True or false? A coin is heads up. Ann flips it. Is it still heads up?\nA:"
    paths = [" Ann flips it once, so it is tails. So the answer is", " So the answer is", " Heads, then tails. So the answer is"]
    cached = continuation_states(smollm, prefix, paths, batch_size=2)  # a ragged last batch too
    full = last_token_states(smollm, [prefix + p for p in paths])
    assert cached.shape == full.shape == (31, 3, 576)
    assert (cached - full).abs().max() < 1e-3 * full.abs().max()


def test_two_hop_query_prompts():
    q = TwoHopQuery(**QUERY)
    assert q.source_prompt == "The currency of the country whose capital is Tokyo is the"
    checks = check_prompts(q)
    assert checks["first_hop"] == ("Tokyo is the capital of", "e2")
    assert checks["entity_shortcut"] == ("The currency of Tokyo is the", "e3")
    assert checks["relation_shortcut"][0] == "The currency of the country whose capital is X is the"
    assert q.answers("e3") == ["Japanese yen", "yen"]


def test_the_packaged_set_adds_a_seeded_sample_of_province_chains_each_true_to_countryinfo():
    from layerbench.data.packaged import _countries
    from layerbench.data.two_hop import PROVINCE_CHAINS, _listed, _unaccented, packaged_two_hop_records

    records, _ = packaged_two_hop_records()
    provinces = [r for r in records if r["r1"] == "province-of"]
    assert len(provinces) == PROVINCE_CHAINS == 200 and len(records) == 794
    assert provinces == [r for r in packaged_two_hop_records()[0] if r["r1"] == "province-of"]  # the same sample every time
    by_name = {c["name"]: c for c in _countries()[0]}
    for r in provinces:
        country = by_name[r["e2"]]
        assert r["e1"] in _listed(country["provinces"]) and r["e3"] == country["capital"]
        assert r["e1"] not in by_name and "(" not in r["e1"] and r["e1"] not in (r["e2"], r["e3"])
    q = TwoHopQuery(**provinces[0])
    assert q.source_prompt == f"The capital of the country where the province {q.e1} is located is"
    assert check_prompts(q)["first_hop"] == (f"{q.e1} is a province of the country of", "e2")
    assert len({r["e2"] for r in provinces}) > 80  # spread over many countries, not one country's provinces
    assert _unaccented("Brasília") == ["Brasilia"] and _unaccented("Paris") == []  # a capital counts written either way
    assert all(r["e3_aliases"] == _unaccented(r["e3"]) for r in provinces)
    # A country's other names (countryinfo's altSpellings, a JSON list) count as the first hop's answer; the two-letter
    # codes and the name itself do not (version 1 of the task read them as a string and kept none).
    albania = next(r for r in records if r["e2"] == "Albania")
    assert "Republic of Albania" in albania["e2_aliases"] and "AL" not in albania["e2_aliases"] and "Albania" not in albania["e2_aliases"]
    assert sum(bool(r["e2_aliases"]) for r in records) > 600


@pytest.mark.parametrize("change, message", [
    ({"e3_aliases": [""]}, "e3_aliases: .*alias is empty"),
    ({"r2_template": "The currency of the country is"}, "r2_template: .*one '{}' slot"),
    ({"r1_phrase": "the country {} whose capital is {}"}, "r1_phrase"),
    ({"e2": ""}, "e2: "),
])
def test_bad_two_hop_queries_are_clear_user_errors(change, message):
    with pytest.raises(UserError, match=message):
        parse_queries([QUERY | change], "my-queries.jsonl")


def test_answers_match_whole_words_ignoring_case():
    assert mentions(" the Japanese Yen.", ["yen"]) and mentions(" yen", ["Yen"])
    assert not mentions(" business", ["US"]) and not mentions(" Parisian", ["Paris"])
    # Early stopping decides only when no later token can change the verdict.
    assert not settled(" Paris", ["Paris"]) and settled(" Paris,", ["Paris"]) and not settled(" Parisi", ["Paris"])


def test_layer_pairs_of_the_sweep():
    back = layer_pairs(4, BackpatchSettings())
    assert back == [(ls, lt) for lt in range(5) for ls in range(5) if ls > lt] and len(back) == 10
    both = layer_pairs(4, BackpatchSettings(forward_patching=True, layer_step=2))
    assert sorted(both) == sorted([(ls, lt) for ls in (0, 2, 4) for lt in (0, 2, 4) if ls != lt])


def test_internal_consistency_closed_form():
    # Three layers, four paths. Layer 0 says True for everything (a biased layer); calibration removes the bias.
    p_true = np.array([[0.9, 0.8, 0.95, 0.85], [0.2, 0.9, 0.1, 0.7], [0.1, 0.8, 0.3, 0.9]])
    final = p_true[-1] > 0.5  # F T F T
    calibrated = calibrated_answers(p_true, final)
    assert calibrated[-1].tolist() == final.tolist()
    assert calibrated[0].tolist() == [True, False, True, False]  # the two highest of layer 0
    np.testing.assert_allclose(internal_consistency(calibrated, calibrated[-1], 0), [2 / 3, 2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(internal_consistency(p_true > 0.5, final, 0), [2 / 3, 1, 2 / 3, 1])
    np.testing.assert_allclose(internal_consistency(p_true > 0.5, final, 1), [1, 1, 1, 1])


def test_cut_path_stops_before_the_answer():
    assert cut_path(" The coin was flipped 2 times. So the answer is True.") == ("The coin was flipped 2 times.", True)
    assert cut_path(" 3 flips, odd.\n\nQ: next") == ("3 flips, odd.", False)
    assert cut_path(" still thinking") == ("still thinking", False)


@pytest.mark.slow
def test_backpatch_sweep_rows_on_a_handful_of_queries(smollm):
    check_backpatch_rows(smollm)


@pytest.mark.slow
def test_internal_consistency_rows_on_a_handful_of_questions(smollm):
    check_consistency_rows(smollm)


