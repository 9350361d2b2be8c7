"""Offline multilingual word sets from CLDR (the ``babel`` package): the latent-language family's prompts.

CLDR names territories, languages, weekdays and months in hundreds of
locales. A *concept* is one of them (France, the German language, Monday,
January); its *words* are its names in each language of
:data:`LANGUAGES`. From them, in the prompt formats of Wendler et al. 2024
(epfl-dlab/llm-latent-language ``Translation.ipynb``, ``Cloze.ipynb``):

- translation: ``shots`` worked pairs of other concepts of the same kind, then the concept's word in the input
  language and the start of its word in the target language::

      Français: "lundi" - 中文: "星期一"
      ...
      Français: "France" - 中文: "

- repetition: the same with the input language the target language (``中文: "书" - 中文: "``);
- cloze: two worked sentences about other countries, then a sentence with the language spoken in a country
  blanked and cut before its answer (``En "Japon", on parle "___". Réponse : "``); the answer is the
  language's name in the target language, and its English equivalent the language's English name.

Every item records its words in every language (what the logit lens is read
against), its kind, concept and languages. Which items a model can be read on
(their words' first tokens must differ from the English word's) is decided per
model, by the family's evaluator.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from layerbench.data.dataset import TextDataset
from layerbench.data.packaged import packaged_dataset
from layerbench.errors import UserError

# English (the pivot the papers look for), the languages of Wendler et al. (fr, de, ru, zh), Spanish, Japanese, and two more
# scripts (Korean, Hindi).
LANGUAGES = ("en", "fr", "de", "es", "zh", "ja", "ru", "ko", "hi")
# How a prompt names a language (the authors' lang2name, extended).
LANGUAGE_NAMES = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español", "zh": "中文", "ja": "日本語", "ru": "Русский",
                  "ko": "한국어", "hi": "हिन्दी"}
# Concepts: well-known countries (ISO 3166) and languages (ISO 639), the seven weekdays, the twelve months.
COUNTRIES = ("FR", "DE", "ES", "IT", "PT", "NL", "SE", "PL", "GR", "TR", "RU", "UA", "CN", "JP", "KR", "IN", "TH", "VN", "EG", "IL",
             "IR", "BR", "MX", "AR", "FI", "HU", "CZ", "ID")
SPOKEN = ("fr", "de", "es", "it", "pt", "nl", "sv", "pl", "el", "tr", "ru", "uk", "zh", "ja", "ko", "hi", "th", "vi", "ar", "he", "fa",
          "fi", "hu", "cs", "id")
KINDS = ("translation", "repetition", "cloze")
# The cloze sentence in each language, with the country and a blank for its language, and the cue before the answer.
CLOZE = {
    "en": ('In "{country}", people speak "___".', 'Answer: "'),
    "fr": ('En "{country}", on parle "___".', 'Réponse : "'),
    "de": ('In "{country}" spricht man "___".', 'Antwort: "'),
    "es": ('En "{country}" se habla "___".', 'Respuesta: "'),
    "zh": ('在"{country}"，人们说"___"。', '答案："'),
    "ja": ('"{country}"では"___"が話されています。', '答え："'),
    "ru": ('В стране "{country}" говорят на языке "___".', 'Ответ: "'),
    "ko": ('"{country}"에서는 "___"를 사용합니다.', '정답: "'),
    "hi": ('"{country}" में लोग "___" बोलते हैं।', 'उत्तर: "'),
}


def _locale(language: str) -> Any:
    from babel import Locale, UnknownLocaleError

    if language not in LANGUAGE_NAMES:
        raise UserError(f"unknown language code '{language}'; the latent-language words have {', '.join(LANGUAGES)}")
    try:
        return Locale.parse(language)
    except (UnknownLocaleError, ValueError):
        raise UserError(f"CLDR (babel) has no locale '{language}'") from None


def concepts(languages: tuple[str, ...] = LANGUAGES) -> list[dict[str, Any]]:
    """Every concept whose name CLDR has in each of ``languages``: ``{"kind", "id", "words": {language: name}}``.

    Kinds: ``country``, ``language``, ``weekday``, ``month`` (stand-alone wide
    forms, so Russian months are "январь", not the genitive "января").
    """
    locales = {language: _locale(language) for language in languages}
    out = []
    tables = [("country", code, lambda loc, c: loc.territories.get(c)) for code in COUNTRIES]
    tables += [("language", code, lambda loc, c: loc.languages.get(c)) for code in SPOKEN]
    tables += [("weekday", str(i), lambda loc, c: loc.days["stand-alone"]["wide"][int(c)]) for i in range(7)]
    tables += [("month", str(i), lambda loc, c: loc.months["stand-alone"]["wide"][int(c)]) for i in range(1, 13)]
    for kind, code, name in tables:
        words = {language: name(locale, code) for language, locale in locales.items()}
        if all(words.values()):
            out.append({"kind": kind, "id": f"{kind}:{code}", "words": {k: str(v) for k, v in words.items()}})
    return out


def _spoken_in(country: str) -> str | None:
    """The first official language of ``country`` that is one of :data:`SPOKEN`, else None."""
    from babel.languages import get_official_languages

    return next((code for code in get_official_languages(country, de_facto=True) if code in SPOKEN), None)


def _check(targets: list[str], source: str, fallback: str, shots: int) -> None:
    for language in [*targets, source, fallback]:
        _locale(language)
    if "en" in targets:
        raise UserError("latent-language targets exclude en: English is the language the lens is read for as the pivot")
    if source == fallback:
        raise UserError(f"source and fallback_source must differ (both '{source}')")
    if shots < 1:
        raise UserError(f"shots must be at least 1, got {shots}")


@packaged_dataset("cldr-latent-language")
def latent_language_prompts(kind: str = "translation", targets: list[str] | None = None, source: str = "fr", fallback_source: str = "de",
                            shots: int = 4, seed: int = 0) -> TextDataset:
    """Prompts whose next word is a concept's name in a target language, from CLDR's names (module docstring).

    Args:
        kind: ``translation``, ``repetition`` or ``cloze``.
        targets: the target languages (default: every language of :data:`LANGUAGES` but English).
        source: translation's input language (``fallback_source`` when the target is the source).
        shots: worked examples per translation or repetition prompt (cloze: two, as the authors').
        seed: which other concepts the worked examples are.

    Returns:
        One item per (target language, concept): text = the prompt; label = the target language; record =
        ``kind, concept, category, input_lang, target_lang, words`` (the answer's name in every language of :data:`LANGUAGES`).
    """
    if kind not in KINDS:
        raise UserError(f"unknown latent-language kind '{kind}'; use one of {', '.join(KINDS)}")
    targets = list(targets) if targets is not None else [language for language in LANGUAGES if language != "en"]
    _check(targets, source, fallback_source, shots)
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    found = concepts()
    texts, labels, records = [], [], []
    for target in targets:
        if kind == "cloze":
            items = _cloze_items(found, target, rng)
        else:
            given = target if kind == "repetition" else (source if target != source else fallback_source)
            items = _pair_items(found, given, target, shots, rng)
        for text, concept, given in items:
            texts.append(text)
            labels.append(target)
            records.append({"kind": kind, "concept": concept["id"], "category": concept["kind"], "input_lang": given, "target_lang": target,
                            "words": concept["words"]})
    provenance = {"source": "packaged", "dataset": "cldr-latent-language", "distribution": "babel", "distribution_version": _babel_version(),
                  "options": {"kind": kind, "targets": targets, "source": source, "fallback_source": fallback_source, "shots": shots, "seed": seed},
                  "licence": "CLDR data: Unicode License v3 (via babel, BSD-3-Clause); prompts: layerbench (Apache-2.0)"}
    return TextDataset(texts, labels, provenance, records=records)


def _pair_items(found: list[dict[str, Any]], given: str, target: str, shots: int, rng: np.random.Generator) -> list[tuple[str, dict[str, Any], str]]:
    """Translation (or repetition, ``given == target``) prompts: ``shots`` worked pairs of the same kind, then the concept, open-quoted."""
    out = []
    line = '{a}: "{x}" - {b}: "{y}"'
    for concept in found:
        others = [c for c in found if c["kind"] == concept["kind"] and c["id"] != concept["id"]]
        examples = [others[i] for i in rng.choice(len(others), size=min(shots, len(others)), replace=False)]
        worked = "".join(line.format(a=LANGUAGE_NAMES[given], x=c["words"][given], b=LANGUAGE_NAMES[target], y=c["words"][target]) + "\n" for c in examples)
        prompt = worked + f'{LANGUAGE_NAMES[given]}: "{concept["words"][given]}" - {LANGUAGE_NAMES[target]}: "'
        out.append((prompt, concept, given))
    return out


def _cloze_items(found: list[dict[str, Any]], target: str, rng: np.random.Generator) -> list[tuple[str, dict[str, Any], str]]:
    """Cloze prompts: two worked sentences (a country, its language's name), then a country's sentence cut before its answer."""
    languages = {c["id"].split(":", 1)[1]: c for c in found if c["kind"] == "language"}
    pairs = [(c, languages[spoken]) for c in found if c["kind"] == "country" and (spoken := _spoken_in(c["id"].split(":", 1)[1])) in languages]
    sentence, cue = CLOZE[target]
    out = []
    for country, language in pairs:
        others = [p for p in pairs if p[0]["id"] != country["id"] and p[1]["id"] != language["id"]]
        examples = [others[i] for i in rng.choice(len(others), size=2, replace=False)]
        worked = "".join(f'{sentence.format(country=c["words"][target])} {cue}{lang["words"][target]}".\n' for c, lang in examples)
        out.append((worked + f'{sentence.format(country=country["words"][target])} {cue}', language, target))
    return out


def _babel_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("babel")
