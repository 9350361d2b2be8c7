"""The latent-language family: CLDR prompts in the authors' formats, our token rule against a brute-force scan, the filters and
the rows on known cases, and a run (tests/test_gemma3.py checks the authors' token rule and readout against their notebook on Gemma 3)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from helpers import check_prefix_token_rule

from layerbench.data import load_packaged
from layerbench.data.cldr import KINDS, LANGUAGE_NAMES, concepts
from layerbench.errors import UserError
from layerbench.evaluators.latent_language import LEAD_FLOOR, language_rows, token_sets


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


@pytest.mark.slow
def test_our_token_rule_is_every_token_that_begins_the_word(smollm):
    """On SmolLM2's byte-level BPE (tests/test_gemma3.py checks Gemma 3's SentencePiece vocabulary)."""
    check_prefix_token_rule(smollm)


def test_prompts_are_dropped_by_the_filters_and_counted():
    """An English word inside the target word, a shared token, or no token: dropped and counted by target and reason."""
    def rule(word: str, language: str) -> list[int]:
        return {"cloud": [1, 2], "nuage": [3], "Cloud-9": [4], "wolke": [2, 5], "???": []}[word]

    records = [{"kind": "translation", "target_lang": "fr", "words": {"en": "cloud", "fr": "nuage"}},
               {"kind": "translation", "target_lang": "fr", "words": {"en": "cloud", "fr": "Cloud-9"}},
               {"kind": "cloze", "target_lang": "fr", "words": {"en": "cloud", "fr": "Cloud-9"}},
               {"kind": "translation", "target_lang": "fr", "words": {"en": "cloud", "fr": "wolke"}},
               {"kind": "translation", "target_lang": "fr", "words": {"en": "cloud", "fr": "???"}}]
    kept, sets, dropped = token_sets(records, ["en", "fr"], rule, ["translation", "repetition"])
    assert kept == [0, 2] and [s.tolist() for s in sets[0]] == [[1, 2], [3]]
    assert dropped == Counter({("fr", "english-inside"): 1, ("fr", "shared-tokens"): 1, ("fr", "no-tokens"): 1})
    with pytest.raises(UserError, match="target language 'zh' is not among the languages read"):
        token_sets([{"kind": "cloze", "target_lang": "zh", "words": {"en": "x", "zh": "y"}}], ["en", "fr"], rule, KINDS)


def test_the_containment_filter_counts_first_under_the_authors_order():
    """A prompt whose English word is inside its target word and whose token sets meet: ours counts it as shared tokens (the
    containment filter last), the authors' order as English inside (Translation.ipynb drops those rows before it builds prompts);
    the prompts kept are the same either way."""
    def rule(word: str, language: str) -> list[int]:
        return {"cloud": [1, 2], "Cloud-9": [2, 4], "nuage": [3]}[word]

    records = [{"kind": "translation", "target_lang": "fr", "words": {"en": "cloud", "fr": "Cloud-9"}},
               {"kind": "translation", "target_lang": "fr", "words": {"en": "cloud", "fr": "nuage"}}]
    ours = token_sets(records, ["en", "fr"], rule, KINDS)
    theirs = token_sets(records, ["en", "fr"], rule, ["translation", "repetition"], containment_first=True)
    assert ours[0] == theirs[0] == [1]
    assert ours[2] == Counter({("fr", "shared-tokens"): 1}) and theirs[2] == Counter({("fr", "english-inside"): 1})


def _their_translation_kept(records: list[dict], rule) -> tuple[list[int], int]:
    """Translation.ipynb cells 9 and 11, as written for one target language: drop the rows whose English word is inside the
    target word, then in ``sample`` skip a row with no tokens or shared tokens. Returns the kept rows and the count dropped first."""
    rows = [i for i, r in enumerate(records) if not r["words"]["en"].lower() in r["words"][r["target_lang"]].lower()]
    kept = []
    for i in rows:
        target = records[i]["target_lang"]
        out_ids, latent_ids = rule(records[i]["words"][target], target), rule(records[i]["words"]["en"], "en")
        if len(out_ids) == 0 or len(latent_ids) == 0 or set(out_ids) & set(latent_ids):
            continue
        kept.append(i)
    return kept, len(records) - len(rows)


def test_the_wendler2024_filters_keep_and_count_what_the_authors_notebook_does(smollm):
    """On the packaged translation prompts and SmolLM2's vocabulary, the authors' settings keep the rows their notebook keeps and
    count as English-inside every row it drops in cell 9."""
    from layerbench.evaluators.latent_language import wendler2024_token_ids
    from layerbench.families.latent_language import FAMILY

    settings = FAMILY.settings(**FAMILY.protocol("wendler2024").settings)
    rule = wendler2024_token_ids(smollm.tokenizer)
    data = load_packaged("cldr-latent-language", {"kind": "translation"})
    kept, _, dropped = token_sets(data.records, list(settings.languages), rule, settings.containment_filter, settings.containment_first)
    their_kept, their_inside = _their_translation_kept(data.records, rule)
    assert kept == their_kept and their_inside > 0
    assert sum(c for (_, reason), c in dropped.items() if reason == "english-inside") == their_inside


def test_the_authors_cloze_cue_cuts_the_query_as_their_notebook_does():
    """Cloze.ipynb cell 8: ``row.split("：")[0] + ': "'`` for Chinese, ``row.split(":")[0] + ': "'`` otherwise, on the query line
    alone; the worked sentences above it are left as written. Chinese ends 答案: " (ours: 答案：" as Chinese writes it)."""
    from layerbench.evaluators.latent_language import authors_cloze_query, prompt_as_read

    data = load_packaged("cldr-latent-language", {"kind": "cloze", "targets": ["zh", "fr", "de", "ru"]})
    for text, record in zip(data.texts, data.records):
        head, _, query = text.rpartition("\n")
        theirs = query.split("：")[0] + ': "' if record["target_lang"] == "zh" else query.split(":")[0] + ': "'
        assert authors_cloze_query(text) == head + "\n" + theirs
        assert prompt_as_read(text, "cloze", "as-written") == text
        if record["target_lang"] == "zh":
            assert text.endswith('答案："') and authors_cloze_query(text).endswith('答案: "')
        else:
            assert authors_cloze_query(text) == text  # their cut gives back our cue
    assert prompt_as_read(data.texts[0], "translation", "authors") == data.texts[0]


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
    # Their errors: the English peak's is that layer's p_en row's (0.6 and 0.4: sd 0.1414 / sqrt 2); both prompts decide
    # at layer 2, so every resample does and the decision has no spread.
    assert table[("english_peak", "all", None)]["stderr"] == pytest.approx(table[("p_en", "all", 1)]["stderr"]) == pytest.approx(0.1)
    assert table[("decision_depth", "all", None)]["stderr"] == 0.0
    assert table[("answered", "fr", None)]["value"] == 0.5
    dropped = table[("dropped_shared_tokens", "all", None)]
    assert dropped["value"] == 3 and dropped["n"] == 5


def test_the_decision_depths_error_resamples_prompts():
    """Half the prompts lead from layer 1, half from layer 3 of 4: a resample decides at 1 when most of its prompts are
    early, at 3 otherwise (a majority needs both halves at layer 3): about half the draws each, an sd near 0.5 x 2 / 4."""
    from layerbench.evaluators.latent_language import decision_stderr

    leads = np.zeros((5, 40), bool)
    leads[1:, :21] = True  # 21 early prompts: the full sample decides at layer 1
    leads[3:, 21:] = True
    error = decision_stderr(leads, [0, 1, 2, 3, 4], 4)
    assert 0.15 < error < 0.3
    # The same draws as explicit resampled lists of prompts (paired.bootstrap_weights' seeded draw).
    from layerbench.paired import STDERR_RESAMPLES

    draws = np.random.default_rng([0, 40, STDERR_RESAMPLES]).integers(0, 40, size=(STDERR_RESAMPLES, 40))
    depths = [np.argmax(leads[:, idx].mean(axis=1) > 0.5) / 4 for idx in draws]
    assert error == pytest.approx(np.std(depths, ddof=1), abs=1e-12)
    assert decision_stderr(np.ones((5, 40), bool), [0, 1, 2, 3, 4], 4) == 0.0


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


def test_the_authors_token_rule_gives_its_ids_in_one_order_whatever_the_hash_seed():
    """The masses sum the rule's token probabilities in the order given; an order taken from a set of strings changed with
    PYTHONHASHSEED and moved the wendler2024 rows in their last bits from one run to the next."""
    import os
    import subprocess
    import sys

    code = ("import types; from layerbench.evaluators.latent_language import wendler2024_token_ids\n"
            "words = ['nuage', 'Wolke', 'облако', 'nube', 'cloud']\n"
            "vocab = {t: i for i, t in enumerate(sorted({w[:k] for w in words for k in range(1, len(w) + 1)} | {'▁' + w[:k] for w in words for k in range(1, 3)} | {'<0xD0>'}))}\n"
            "rule = wendler2024_token_ids(types.SimpleNamespace(get_vocab=lambda: vocab))\n"
            "print([rule(w, 'ru') for w in words])")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "3")]
    assert runs[0] == runs[1] == runs[2] and "[" in runs[0]
    assert all(ids == sorted(ids) for ids in eval(runs[0]))
