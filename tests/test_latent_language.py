"""The latent-language family: CLDR prompts in the authors' formats, the token rules (ours against a brute-force scan, theirs
against their notebook's lines), the lens readout against their hooks on Gemma 3, the rows on known arrays, and a run."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from layerbench.data import load_packaged
from layerbench.data.cldr import LANGUAGE_NAMES, concepts
from layerbench.errors import UserError
from layerbench.evaluators.latent_language import (
    LEAD_FLOOR,
    language_rows,
    prefix_token_ids,
    token_bytes,
    token_sets,
    wendler2024_token_ids,
)
from layerbench.models.residual import last_token_states, lens_masses

WORDS = {"en": "cloud", "fr": "nuage", "de": "Wolke", "zh": "云", "ru": "облако", "ja": "雲", "ko": "구름", "hi": "बादल", "es": "nube"}


def test_cldr_concepts_and_prompts_follow_the_authors_formats():
    found = concepts()
    kinds = Counter(c["kind"] for c in found)
    assert kinds["weekday"] == 7 and kinds["month"] == 12 and kinds["country"] >= 20 and kinds["language"] >= 15
    monday = next(c for c in found if c["id"] == "weekday:0")["words"]
    assert (monday["en"], monday["fr"], monday["zh"], monday["ru"]) == ("Monday", "lundi", "星期一", "понедельник")
    january = next(c for c in found if c["id"] == "month:1")["words"]
    assert january["ru"] == "январь"  # the stand-alone form, not the genitive "января"
    data = load_packaged("cldr-latent-language", {"kind": "translation", "targets": ["zh"]})
    record, prompt = data.records[0], data.texts[0]
    # Translation.ipynb's sample(): k - 1 = 4 worked pairs, then the query with its target's opening quote.
    lines = prompt.split("\n")
    assert len(lines) == 5 and all(line.startswith('Français: "') and ' - 中文: "' in line and line.endswith('"') for line in lines[:4])
    assert lines[4] == f'{LANGUAGE_NAMES["fr"]}: "{record["words"]["fr"]}" - {LANGUAGE_NAMES["zh"]}: "'
    assert record["input_lang"] == "fr" and record["target_lang"] == "zh" and data.labels[0] == "zh"
    french = load_packaged("cldr-latent-language", {"kind": "translation", "targets": ["fr"]})
    assert french.texts[0].split("\n")[-1].startswith('Deutsch: "')  # the source is French, so French targets read German
    repeat = load_packaged("cldr-latent-language", {"kind": "repetition", "targets": ["ru"]}).texts[0].split("\n")[-1]
    assert repeat.startswith('Русский: "') and repeat.endswith(' - Русский: "')
    cloze = load_packaged("cldr-latent-language", {"kind": "cloze", "targets": ["fr"]})
    worked, query = cloze.texts[0].rsplit("\n", 1)
    assert worked.count('Réponse : "') == 2 and query.startswith('En "') and query.endswith('Réponse : "') and "___" in query
    assert cloze.records[0]["category"] == "language"  # the answer is a language's name
    assert load_packaged("cldr-latent-language", {"kind": "cloze", "seed": 0}).texts == load_packaged("cldr-latent-language", {"kind": "cloze", "seed": 0}).texts


@pytest.mark.parametrize(("options", "message"), [
    ({"targets": ["xx"]}, "unknown language code 'xx'"),
    ({"targets": ["en"]}, "targets exclude en"),
    ({"kind": "dictation"}, "unknown latent-language kind"),
    ({"shots": 0}, "shots must be at least 1"),
])
def test_bad_latent_language_options_are_one_line_errors(options, message):
    with pytest.raises(UserError, match=message):
        load_packaged("cldr-latent-language", options)


def _brute_force(tokenizer, word: str) -> list[int]:
    """Every token whose bytes (decoded one token at a time, the independent way) begin a spelling of the word, spaced or not."""
    decoded = token_bytes(tokenizer.get_vocab())
    spelled = [word, word[:1].upper() + word[1:], word.lower()]
    bases = [s.encode() for s in spelled] + [b" " + s.encode() for s in spelled]
    return sorted(i for i, data in decoded.items() if data and data != b" " and any(base.startswith(data) for base in bases))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm", "gemma"])
def test_our_token_rule_is_every_token_that_begins_the_word(model, request):
    handle = request.getfixturevalue(model)
    rule = prefix_token_ids(handle.tokenizer)
    for language, word in WORDS.items():
        ids = rule(word, language)
        assert ids == _brute_force(handle.tokenizer, word), (model, word)
        assert ids, f"{model} has no token beginning {word!r}"
    # A token the model would write first for the word is always among them.
    first = handle.tokenizer(" " + WORDS["fr"], add_special_tokens=False).input_ids[0]
    assert first in rule(WORDS["fr"], "fr")


def _their_process_tokens(token_str: str, tokenizer, lang: str) -> list[int]:
    """Translation.ipynb's token_prefixes, add_spaces, capitalizations, unicode_prefix_tokid and process_tokens, as written."""
    with_prefixes = [token_str[:i] for i in range(1, len(token_str) + 1)]
    with_spaces = ["▁" + t for t in with_prefixes] + with_prefixes
    final_tokens = [tokenizer.get_vocab()[tok] for tok in list(set(with_spaces)) if tok in tokenizer.get_vocab()]
    if lang in ["zh", "ru"]:
        start = token_str.encode().__str__()[2:-1].split("\\x")[1]
        start_key = "<0x%s>" % start.upper()
        if start_key in tokenizer.get_vocab():
            final_tokens.append(tokenizer.get_vocab()[start_key])
    return final_tokens


@pytest.mark.slow
def test_the_authors_token_rule_and_readout_equal_their_notebooks_on_gemma(gemma):
    """Gemma 3's tokenizer is SentencePiece with byte fallback, as Llama 2's: their process_tokens gives the same ids, and their
    readout (hooks on model.model.layers, then norm and lm_head, a softmax, the sums) the same masses, at layers 1..L."""
    theirs_rule = wendler2024_token_ids(gemma.tokenizer)
    for language, word in WORDS.items():
        assert sorted(theirs_rule(word, language)) == sorted(_their_process_tokens(word, gemma.tokenizer, language)), word
    data = load_packaged("cldr-latent-language", {"kind": "translation", "targets": ["zh", "ru"]})
    records = [data.records[i] for i in (0, 1, 80, 81)]
    prompts = [data.texts[i] for i in (0, 1, 80, 81)]
    kept, sets, _ = token_sets(records, ["en", "zh", "ru"], theirs_rule, lambda kind: True)
    assert kept
    ours, entropy = lens_masses(gemma, last_token_states(gemma, [prompts[i] for i in kept])[1:], [sets[i] for i in range(len(kept))])
    model = gemma.model
    for position, i in enumerate(kept):
        outputs = []
        hooks = [layer.register_forward_hook(lambda m, a, o, outputs=outputs: outputs.append((o[0] if isinstance(o, tuple) else o)[:, -1]))
                 for layer in model.model.layers]
        try:
            with torch.no_grad():
                model(**gemma.tokenizer(prompts[i], return_tensors="pt"))
                last = model.lm_head(model.model.norm(torch.cat(outputs))).float().softmax(dim=-1)  # [L, V]
        finally:
            for hook in hooks:
                hook.remove()
        target = records[i]["target_lang"]
        out_ids = _their_process_tokens(records[i]["words"][target], gemma.tokenizer, target)
        latent_ids = _their_process_tokens(records[i]["words"]["en"], gemma.tokenizer, "en")
        np.testing.assert_allclose(ours[:, position, ["en", "zh", "ru"].index(target)], last[:, out_ids].sum(-1), atol=1e-5)
        np.testing.assert_allclose(ours[:, position, 0], last[:, latent_ids].sum(-1), atol=1e-5)
        their_entropy = (-last * torch.log2(last)).nansum(dim=-1)  # compute_entropy, with 0 log 0 taken as 0
        np.testing.assert_allclose(entropy[:, position], their_entropy, rtol=1e-3, atol=1e-3)


def test_prompts_are_dropped_by_the_filters_and_counted():
    """An English word inside the target word, a shared token, or no token: dropped and counted by target and reason."""
    def rule(word: str, language: str) -> list[int]:
        return {"cloud": [1, 2], "nuage": [3], "Cloud-9": [4], "wolke": [2, 5], "???": []}[word]

    records = [{"kind": "translation", "target_lang": "fr", "words": {"en": "cloud", "fr": "nuage"}},
               {"kind": "translation", "target_lang": "fr", "words": {"en": "cloud", "fr": "Cloud-9"}},
               {"kind": "cloze", "target_lang": "fr", "words": {"en": "cloud", "fr": "Cloud-9"}},
               {"kind": "translation", "target_lang": "fr", "words": {"en": "cloud", "fr": "wolke"}},
               {"kind": "translation", "target_lang": "fr", "words": {"en": "cloud", "fr": "???"}}]
    kept, sets, dropped = token_sets(records, ["en", "fr"], rule, lambda kind: kind != "cloze")
    assert kept == [0, 2] and [s.tolist() for s in sets[0]] == [[1, 2], [3]]
    assert dropped == Counter({("fr", "english-inside"): 1, ("fr", "shared-tokens"): 1, ("fr", "no-tokens"): 1})
    with pytest.raises(UserError, match="target language 'zh' is not among the languages read"):
        token_sets([{"kind": "cloze", "target_lang": "zh", "words": {"en": "x", "zh": "y"}}], ["en", "fr"], rule, lambda kind: True)


def test_rows_place_the_decision_and_the_english_detour_on_known_curves():
    """Two prompts, three layers, languages en and fr: English peaks at layer 1, French leads from layer 2."""
    mass = np.array([[[0.001, 0.002], [0.001, 0.002]],   # layer 0: crumbs (below the floor): no language leads
                     [[0.60, 0.10], [0.40, 0.20]],       # layer 1: English above French in both prompts
                     [[0.10, 0.80], [0.20, 0.70]]])      # layer 2: French leads
    entropy = np.full((3, 2), 2.0)
    rows = language_rows(mass, entropy, ["fr", "fr"], ["en", "fr"], [0, 1, 2], 2, np.array([True, False]), Counter({("fr", "shared-tokens"): 3}),
                         Counter({"fr": 5}))
    table = {(r["metric"], r["subset"], r["layer"]): r for r in rows}
    assert table[("p_target", "all", 1)]["value"] == pytest.approx(0.15) and table[("p_en", "fr", 1)]["value"] == pytest.approx(0.5)
    assert table[("target_leads", "all", 0)]["value"] == 0 and table[("english_leads", "all", 1)]["value"] == 1 and LEAD_FLOOR > 0.002
    assert table[("decision_layer", "all", None)]["value"] == 2 and table[("decision_depth", "all", None)]["value"] == 1.0
    assert table[("english_peak", "all", None)]["value"] == pytest.approx(0.5) and table[("english_peak_layer", "all", None)]["value"] == 1
    assert table[("english_lead_first", "all", None)]["value"] == 1 and table[("english_lead_last", "all", None)]["value"] == 1
    assert table[("answered", "fr", None)]["value"] == 0.5
    dropped = table[("dropped_shared_tokens", "all", None)]
    assert dropped["value"] == 3 and dropped["n"] == 5


@pytest.mark.slow
def test_a_run_writes_per_layer_per_language_rows_and_skips_an_encoder(tmp_path, capsys):
    """SmolLM2 under ours and the authors' protocol on a few cloze prompts; MiniLM (an encoder, no unembedding) is skipped with why."""
    import layerbench
    from layerbench.cli import main

    out = tmp_path / "results"
    args = ["run", "-m", "smollm2-135m-q4", "-m", "minilm-l6", "--tasks", "latent-language-cloze", "--protocol", "layerbench,paper",
            "--limit", "24", "--no-metrics", "-o", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "latent-language skipped: it needs a causal language model" in err
    rows = layerbench.load_results(out)
    assert set(rows.model) == {"smollm2-135m-q4"} and set(rows.protocol) == {"layerbench", "wendler2024"}
    ours = rows[rows.protocol == "layerbench"]
    per_layer = ours[(ours.metric == "p_en") & (ours.subset == "all")]
    assert sorted(per_layer.layer) == list(range(31)) and per_layer.value.between(0, 1).all()
    assert {"p_target", "p_en", "p_zh", "p_hi", "entropy", "target_leads", "english_leads"} <= set(ours.metric)
    theirs = rows[(rows.protocol == "wendler2024") & (rows.metric == "p_target") & (rows.subset == "all")]
    assert sorted(theirs.layer) == list(range(1, 31))  # the authors read block outputs 1..L
    summary = layerbench.summary(rows)
    assert set(summary.columns) >= {"decision_depth", "english_detour"} and summary.english_detour.notna().all()
    # What the token filter dropped is counted in the rows and in the run manifest.
    import json

    manifest = json.loads(next((out / "smollm2-135m-q4" / "runs").glob("*.json")).read_text())
    notes = manifest["tasks"]["latent-language-cloze"]["variants"]["@wendler2024"]["evaluator_notes"]["prompts"]
    dropped = rows[(rows.protocol == "wendler2024") & rows.metric.str.startswith("dropped_") & (rows.subset == "all")].value.sum()
    assert notes["asked"] == 24 and notes["read"] + sum(notes["dropped"].values()) == 24 and sum(notes["dropped"].values()) == dropped
