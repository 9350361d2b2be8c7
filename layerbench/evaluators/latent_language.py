"""The latent language of every layer (Zhong et al. 2024, after Wendler et al. 2024): the logit lens at the answer's position.

Each prompt (:mod:`layerbench.data.cldr`) ends where the model should write a
word in a target language. One forward pass per batch of prompts records the
residual stream of every layer at the last token; the logit lens (the final
norm and the unembedding) turns each layer's state into a next-token
distribution, and a language's probability is the mass on the tokens that
begin the answer's spelling in that language. Per layer the rows give each
language's mean probability, the entropy, and how often the target language
and English lead; the summaries place the *decision* (the first layer where the
target language leads in most prompts) and the *English detour* (the peak
English probability, its layer, and the layers where English is above the
target language).

One evaluator, :func:`evaluate_latent_language`, runs every protocol: ours
and the authors' notebooks (``wendler2024``) differ only in settings (the token
rule, the first layer read, the containment filter and its place, and the cloze
cue; :class:`~layerbench.families.latent_language.LatentLanguageSettings`).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import torch

from layerbench.errors import UserError
from layerbench.families import EvaluatorContext
from layerbench.models.residual import last_token_states, lens_logits, lens_masses
from layerbench.paired import STDERR_RESAMPLES, bootstrap_weights
from layerbench.results.items import Scored
from layerbench.results.rows import mean_row, summary_row

TokenRule = Callable[[str, str], list[int]]  # (word, language) -> the token ids that begin it
# A language "leads" only with at least this much probability: at the embedding layer every language has almost none, and which
# of those crumbs is largest says nothing (our definition; the papers read the curves by eye).
LEAD_FLOOR = 0.01


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet backwards: the printable character a byte-level BPE vocabulary writes for each byte -> the byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_bytes(vocab: dict[str, int]) -> dict[int, bytes]:
    """The bytes each token of a vocabulary (token string -> id) stands for.

    Byte-level BPE (GPT-2, SmolLM2: a leading space is "Ġ") writes every byte as
    a printable character; SentencePiece (Llama, Gemma) writes a leading space
    as "▁" and a byte it has no piece for as ``<0xXX>``. Which one a vocabulary
    is: whichever space marker begins more of its tokens (a multilingual
    SentencePiece vocabulary has a few tokens that begin with a literal "Ġ").
    """
    spaced = Counter(token[:1] for token in vocab if token[:1] in ("Ġ", "▁"))
    if spaced["Ġ"] > spaced["▁"]:
        decoder = _byte_decoder()
        return {i: bytes(decoder[c] for c in token) for token, i in vocab.items() if all(c in decoder for c in token)}
    out = {}
    for token, i in vocab.items():
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            out[i] = bytes([int(token[3:5], 16)])
        else:
            out[i] = token.replace("▁", " ").encode("utf-8")
    return out


@lru_cache(maxsize=4)
def _byte_index(tokenizer: Any) -> dict[bytes, list[int]]:
    index: dict[bytes, list[int]] = {}
    for i, data in token_bytes(tokenizer.get_vocab()).items():
        index.setdefault(data, []).append(i)
    return index


def spellings(word: str) -> list[str]:
    """The spellings a language's answer counts in: the word as CLDR writes it, capitalized, and in lower case."""
    return list(dict.fromkeys([word, word[:1].upper() + word[1:], word.lower()]))


def prefix_token_ids(tokenizer: Any) -> TokenRule:
    """Our token rule: the tokens whose bytes are a non-empty prefix of a spelling of the word (its UTF-8), with or without a
    leading space; any tokenizer (partial characters of a byte-level BPE count, as the authors count ``<0xXX>``)."""
    index = _byte_index(tokenizer)

    def ids(word: str, language: str) -> list[int]:
        found: set[int] = set()
        for spelling in spellings(word):
            data = spelling.encode("utf-8")
            for base, shortest in ((data, 1), (b" " + data, 2)):  # a bare space is no prefix of the word
                for end in range(shortest, len(base) + 1):
                    found.update(index.get(base[:end], ()))
        return sorted(found)

    return ids


def wendler2024_token_ids(tokenizer: Any) -> TokenRule:
    """The authors' ``process_tokens`` (in id order): the vocabulary entries equal to a prefix of the word, with or without "▁", and for
    Chinese and Russian the ``<0xXX>`` token of the word's first non-ASCII UTF-8 byte (their ``unicode_prefix_tokid`` reads the
    first ``\\x`` escape of the bytes' repr; a word with none gets no byte token, where their code would raise)."""
    vocab = tokenizer.get_vocab()

    def ids(word: str, language: str) -> list[int]:
        prefixes = [word[:end] for end in range(1, len(word) + 1)]
        found = {vocab[token] for token in ["▁" + p for p in prefixes] + prefixes if token in vocab}
        if language in ("zh", "ru"):
            byte = next((b for b in word.encode() if b >= 0x80), None)
            first = f"<0x{byte:02X}>" if byte is not None else None
            if first in vocab:
                found.add(vocab[first])
        # In id order: the masses sum these tokens' probabilities, and an order taken from a set of strings changes with
        # Python's hash seed, which moved the float32 sums in their last bits from one run to the next.
        return sorted(found)

    return ids


TOKEN_RULES: dict[str, Callable[[Any], TokenRule]] = {"byte-prefix": prefix_token_ids, "vocabulary-prefix": wendler2024_token_ids}


def authors_cloze_query(prompt: str) -> str:
    """A cloze prompt whose last line is cut as the authors' ``Cloze.ipynb`` cuts a row: at its first colon (the full-width
    "：" in Chinese and, by the same rule, Japanese; ":" otherwise), followed by ``': "'``. ``答案："`` becomes ``答案: "``; a
    cue that already ends ``: "`` ("Réponse : \"") is unchanged."""
    head, newline, last = prompt.rpartition("\n")
    colon = "：" if "：" in last else ":"
    return head + newline + last.split(colon)[0] + ': "'


def token_sets(records: list[dict[str, Any]], languages: list[str], rule: TokenRule, containment_kinds: Collection[str],
               containment_first: bool = False) -> tuple[list[int], list[list[torch.Tensor]], Counter[tuple[str, str]]]:
    """Which prompts can be read, and each one's token set per language.

    A prompt is dropped when its target or English word has no token
    (``no-tokens``), when the two share a token (``shared-tokens``: the lens
    could not tell them apart), or, for a kind in ``containment_kinds``, when
    the English word is inside the target word (``english-inside``). A prompt
    that fails two filters counts under the first: the containment filter
    comes last, or first with ``containment_first`` (the authors drop those
    rows from their table before they build a prompt).

    Returns:
        The kept positions, their ``[K]`` token-id tensors (in the order of ``languages``), and the dropped
        prompts counted by (target language, reason).
    """
    kept: list[int] = []
    sets: list[list[torch.Tensor]] = []
    dropped: Counter[tuple[str, str]] = Counter()
    for i, record in enumerate(records):
        target, words = record["target_lang"], record["words"]
        if target not in languages:
            raise UserError(f"target language '{target}' is not among the languages read ({', '.join(languages)}); add it to the evaluator's languages")
        ids = {language: rule(words[language], language) for language in languages}
        inside = record["kind"] in containment_kinds and words["en"].lower() in words[target].lower()
        reason = ("english-inside" if containment_first and inside else "no-tokens" if not ids[target] or not ids["en"]
                  else "shared-tokens" if set(ids[target]) & set(ids["en"]) else "english-inside" if inside else None)
        if reason:
            dropped[(target, reason)] += 1
            continue
        kept.append(i)
        sets.append([torch.tensor(ids[language], dtype=torch.long) for language in languages])
    return kept, sets, dropped


def language_rows(mass: np.ndarray, entropy: np.ndarray, targets: list[str], languages: list[str], layers: list[int], n_layers: int,
                  answered: np.ndarray, dropped: Counter[tuple[str, str]], asked: Counter[str]) -> list[dict[str, Any]]:
    """Rows of one task: per subset (``all``, then each target language) and layer, each language's mean probability and the
    rest (module docstring); per subset, the decision, the English detour, the share answered and the prompts dropped.

    Args:
        mass: ``[K', P, K]`` lens probability of each language's tokens, at the K' layers read. entropy: ``[K', P]`` bits.
        targets: ``[P]`` each prompt's target language. answered: ``[P]`` the model's own top token begins the target word.
        asked: prompts per target language before the filter.
    """
    targets_arr = np.asarray(targets)
    position = np.arange(len(targets))
    target_index = np.array([languages.index(t) for t in targets], dtype=int)
    english = languages.index("en")
    p_target = mass[:, position, target_index] if len(targets) else np.zeros((len(layers), 0))
    others = mass.copy()
    others[:, position, target_index] = -np.inf
    target_leads = (p_target > others.max(axis=-1, initial=-np.inf)) & (p_target >= LEAD_FLOOR)
    not_english = mass.copy()
    not_english[..., english] = -np.inf
    english_leads = (mass[..., english] > not_english.max(axis=-1, initial=-np.inf)) & (mass[..., english] >= LEAD_FLOOR)
    rows: list[dict[str, Any]] = []
    for subset in ["all", *sorted(set(asked))]:
        members = np.ones(len(targets), bool) if subset == "all" else targets_arr == subset
        n = int(members.sum())
        for li, layer in enumerate(layers):
            rows.append(mean_row("p_target", layer, p_target[li, members], higher_is_better=True, subset=subset))
            rows += [mean_row(f"p_{language}", layer, mass[li, members, k], higher_is_better=None, subset=subset) for k, language in enumerate(languages)]
            rows.append(mean_row("entropy", layer, entropy[li, members], higher_is_better=None, subset=subset))
            rows.append(mean_row("target_leads", layer, target_leads[li, members].astype(float), higher_is_better=None, subset=subset))
            rows.append(mean_row("english_leads", layer, english_leads[li, members].astype(float), higher_is_better=None, subset=subset))
        rows += _summary_rows(p_target[:, members], mass[:, members, english], target_leads[:, members], layers, n_layers, subset, n)
        rows.append(summary_row("answered", float(answered[members].mean()) if n else float("nan"), n=n, higher_is_better=None, subset=subset))
        total = sum(asked.values()) if subset == "all" else asked[subset]
        for reason in ("no-tokens", "shared-tokens", "english-inside"):
            count = sum(c for (t, r), c in dropped.items() if r == reason and subset in ("all", t))
            rows.append(summary_row(f"dropped_{reason.replace('-', '_')}", count, n=total, higher_is_better=None, subset=subset))
    return rows


def decision_stderr(target_leads: np.ndarray, layers: list[int], n_layers: int, seed: int = 0) -> float:
    """The standard error of the decision depth (the first of ``layers`` where the target leads in most prompts, / L):
    the standard deviation of it over :data:`~layerbench.paired.STDERR_RESAMPLES` resamples of the prompts (``target_leads`` ``[layers, prompts]``
    booleans); a draw where the target leads in no layer for most prompts counts as deciding after the last layer (depth 1)."""
    n = target_leads.shape[1]
    weights = bootstrap_weights(n, STDERR_RESAMPLES, seed)  # [B, prompts]
    majority = (weights @ target_leads.T.astype(np.float64)) / n > 0.5  # [B, layers]
    positions = np.append(np.asarray(layers, float), n_layers) / n_layers
    depths = positions[np.where(majority.any(axis=1), np.argmax(majority, axis=1), len(layers))]
    return float(depths.std(ddof=1))


def _summary_rows(p_target: np.ndarray, p_english: np.ndarray, target_leads: np.ndarray, layers: list[int], n_layers: int, subset: str,
                  n: int) -> list[dict[str, Any]]:
    """The decision (first layer where the target language leads in most prompts) and the English detour (its peak, and the first
    and last layer where English's mean probability is above the target language's and at least :data:`LEAD_FLOOR`)."""
    nan = float("nan")
    if n == 0:
        return [summary_row(m, nan, n=0, higher_is_better=None, subset=subset, note="no prompt left after the token filter")
                for m in ("decision_layer", "decision_depth", "english_peak", "english_peak_layer", "english_peak_depth", "english_lead_first", "english_lead_last")]
    majority = np.flatnonzero(target_leads.mean(axis=1) > 0.5)
    decision = layers[majority[0]] if len(majority) else None
    why = None if decision is not None else "the target language leads in no layer for most prompts"
    english_mean, target_mean = p_english.mean(axis=1), p_target.mean(axis=1)
    peak = int(np.argmax(english_mean))
    above = np.flatnonzero((english_mean > target_mean) & (english_mean >= LEAD_FLOOR))
    peak_se = float(p_english[peak].std(ddof=1) / np.sqrt(n)) if n > 1 else nan
    decision_se = decision_stderr(target_leads, layers, n_layers) if decision is not None else nan
    return [
        summary_row("decision_layer", decision if decision is not None else nan, n=n, higher_is_better=None, subset=subset, note=why,
                    stderr=decision_se * n_layers),
        summary_row("decision_depth", decision / n_layers if decision is not None else nan, n=n, higher_is_better=None, subset=subset, note=why,
                    stderr=decision_se),
        summary_row("english_peak", float(english_mean[peak]), n=n, higher_is_better=None, subset=subset, stderr=peak_se),
        summary_row("english_peak_layer", layers[peak], n=n, higher_is_better=None, subset=subset),
        summary_row("english_peak_depth", layers[peak] / n_layers, n=n, higher_is_better=None, subset=subset),
        summary_row("english_lead_first", layers[above[0]] if len(above) else nan, n=n, higher_is_better=None, subset=subset),
        summary_row("english_lead_last", layers[above[-1]] if len(above) else nan, n=n, higher_is_better=None, subset=subset),
    ]


def evaluate_latent_language(context: EvaluatorContext) -> Scored:
    """The rows of one latent-language task under its settings (the token rule, the first layer read, the containment
    filter and its place, the cloze cue), and a note for the manifest: the prompts asked, read, and dropped by reason."""
    handle, data, settings = context.handle, context.data, context.settings
    if data.records is None or any("words" not in r for r in data.records):
        raise UserError(f"task '{context.spec.name}': latent-language prompts need records with each language's words (data set 'cldr-latent-language')")
    languages = list(settings.languages)
    rule = TOKEN_RULES[settings.token_rule](handle.tokenizer)
    kept, sets, dropped = token_sets(data.records, languages, rule, settings.containment_filter, settings.containment_first)
    asked = Counter(r["target_lang"] for r in data.records)
    notes = {"prompts": {"asked": len(data.records), "read": len(kept),
                         "dropped": {f"{target}: {reason}": count for (target, reason), count in sorted(dropped.items())}}}
    targets = [data.records[i]["target_lang"] for i in kept]
    first_layer = settings.first_layer
    layers = list(range(first_layer, handle.n_layers + 1))
    if kept:
        prompts = [prompt_as_read(data.texts[i], data.records[i]["kind"], settings.cloze_cue) for i in kept]
        states = last_token_states(handle, prompts, settings.batch_size)[first_layer:]  # [K', P, D]
        mass, entropy = lens_masses(handle, states, sets)
        top = lens_logits(handle, states[-1]).argmax(-1).cpu()
        answered = np.array([int(top[p]) in set(sets[p][languages.index(t)].tolist()) for p, t in enumerate(targets)])
        mass_np, entropy_np = mass.numpy().astype(np.float64), entropy.numpy().astype(np.float64)
    else:
        mass_np, entropy_np, answered = np.zeros((len(layers), 0, len(languages))), np.zeros((len(layers), 0)), np.zeros(0, bool)
    return Scored(pd.DataFrame(language_rows(mass_np, entropy_np, targets, languages, layers, handle.n_layers, answered, dropped, asked)), notes=notes)


def prompt_as_read(prompt: str, kind: str, cloze_cue: str) -> str:
    """The prompt the model reads: as the data set wrote it, or a cloze prompt's cue as the authors cut it (``cloze_cue``
    ``authors``: :func:`authors_cloze_query`)."""
    return authors_cloze_query(prompt) if kind == "cloze" and cloze_cue == "authors" else prompt
