"""Two-hop factual queries (after Biran et al. 2024, "Hopping Too Late").

A query composes two facts that share a bridge entity: (e1, r1, e2) and
(e2, r2, e3). "The currency of the country whose capital is Tokyo is the"
needs e1 = Tokyo -r1-> e2 = Japan -r2-> e3 = yen. Each relation has two
templates with one ``{}`` slot for its subject:

- ``template``: a prompt whose continuation is the object ("{} is the capital of");
- ``phrase``: a noun phrase that denotes the object ("the country whose capital is {}"),
  used when the relation is the first hop inside the composed prompt.

So ``source_prompt = r2.template(r1.phrase(e1))``, and the checks of the paper
are plain prompts built from the same templates (the back-patching evaluator builds them: ``layerbench.evaluators.backpatch.check_prompts``).
The packaged set is built from countryinfo and gensim facts (countries' capitals,
regions, demonyms, currencies and provinces; US cities' states) plus a short
hand-written list of well-known chains.
"""
from __future__ import annotations

import ast
import re
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from layerbench.data.dataset import TextDataset, stratified_indices
from layerbench.data.packaged import _countries, gensim_analogy_pairs, packaged_dataset
from layerbench.data.tables import ROW_FORMATS
from layerbench.errors import UserError


def capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


class TwoHopQuery(BaseModel):
    """One two-hop query: entities, aliases and the templates of its two relations.

    Attributes:
        e1, e2, e3: source, bridge and target entity (their main labels).
        e2_aliases, e3_aliases: other names that count as a correct answer (the label itself always counts).
        r1, r2: relation names.
        r1_template, r2_template: prompts with one ``{}`` slot whose continuation is the object.
        r1_phrase: a noun phrase with one ``{}`` slot that denotes r1's object.
        r2_phrase: r2's noun phrase, where the data has one (Biran et al.'s
            templates are phrases: their relation-shortcut prompt is built from it).
        prompt: the composed prompt as the data gives it (Biran et al.'s
            ``source_prompt``); None: built from the templates.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    e1: str = Field(min_length=1)
    r1: str = Field(min_length=1)
    e2: str = Field(min_length=1)
    r2: str = Field(min_length=1)
    e3: str = Field(min_length=1)
    e2_aliases: list[str] = Field(default_factory=list)
    e3_aliases: list[str] = Field(default_factory=list)
    r1_template: str
    r1_phrase: str
    r2_template: str
    r2_phrase: str | None = None
    prompt: str | None = None

    @field_validator("r1_template", "r1_phrase", "r2_template", "r2_phrase")
    @classmethod
    def _one_slot(cls, value: str | None) -> str | None:
        if value is not None and value.count("{}") != 1:
            raise ValueError(f"needs exactly one '{{}}' slot for the subject, got {value!r}")
        return value

    @field_validator("e2_aliases", "e3_aliases")
    @classmethod
    def _no_empty_alias(cls, value: list[str]) -> list[str]:
        if any(not a.strip() for a in value):
            raise ValueError("an alias is empty; every alias must be a non-empty name")
        return value

    @model_validator(mode="after")
    def _answers_known(self) -> "TwoHopQuery":
        if not self.e2.strip() or not self.e3.strip():
            raise ValueError("e2 and e3 must be non-empty names")
        return self

    @property
    def source_prompt(self) -> str:
        """The composed two-hop prompt, capitalized, e.g. "The currency of the country whose capital is Tokyo is the"."""
        return self.composed(capitalize=True)

    def composed(self, capitalize: bool = True) -> str:
        """The composed prompt: the data's own, else r2's template around r1's phrase; capitalized or as written."""
        text = self.prompt if self.prompt is not None else self.r2_template.format(self.r1_phrase.format(self.e1))
        return capitalized(text) if capitalize else text

    def answers(self, entity: str) -> list[str]:
        """The label and aliases of ``e2`` or ``e3``, longest first."""
        names = [self.e2, *self.e2_aliases] if entity == "e2" else [self.e3, *self.e3_aliases]
        return sorted(set(names), key=len, reverse=True)

    def substring_answers(self, entity: str) -> list[str]:
        """Biran et al.'s answers (``utils.get_answers``): the label and the aliases longer than one character."""
        label, aliases = (self.e2, self.e2_aliases) if entity == "e2" else (self.e3, self.e3_aliases)
        return [label] + [a for a in aliases if len(a) > 1]


def parse_queries(records: list[dict[str, Any]], where: str) -> list[TwoHopQuery]:
    """Validate raw records as :class:`TwoHopQuery`; the first bad one is a :class:`UserError` naming its field."""
    queries = []
    for i, record in enumerate(records):
        try:
            queries.append(TwoHopQuery.model_validate(record))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"]) or "query"
            raise UserError(f"{where}: query {i} ({record.get('source_prompt') or record.get('e1', '?')}): {field}: {error['msg']}") from None
    return queries


def mentions(text: str, names: list[str]) -> bool:
    """Whether any of ``names`` appears in ``text`` as a whole word or phrase, ignoring case.

    Word boundaries keep a short alias from matching inside another word ("US" in "business").
    """
    return any(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, flags=re.IGNORECASE) for name in names)


def contains(text: str, names: list[str]) -> bool:
    """Biran et al.'s answer check (``utils.check_answer_in_pred``): any of ``names`` as a substring of ``text``, ignoring case ("CA" is found in "America")."""
    text = text.lower()
    return any(name.lower() in text for name in names)


# Relations: name -> (template, phrase). The subject fills "{}".
RELATIONS: dict[str, tuple[str, str]] = {
    "capital-of": ("{} is the capital of", "the country whose capital is {}"),
    "continent": ("{} is located in the continent of", "the continent of {}"),
    "demonym": ("The people of {} are called", "the people of {}"),
    "currency": ("The currency of {} is the", "the currency of {}"),
    "state-of-city": ("{} is a city in the state of", "the state where {} is located"),
    "state-capital": ("The capital of {} is", "the capital of {}"),
    "province-of": ("{} is a province of the country of", "the country where the province {} is located"),
    "country-capital": ("The capital of {} is", "the capital of {}"),
}
# A seeded sample of countryinfo's province -> country -> capital chains (4,296 after the filters of _province_chains). The
# small decoders know few capitals' countries, and a capital's name alone gives away its continent or language (the entity
# shortcut), so the other chains leave SmolLM2 9 wrong queries to fix, fewer than a headline fix rate needs; these 200 add
# 14 (23 in all; benchmarks/two_hop_yield.py), each swept at about 16 s on 2 CPU cores.
PROVINCE_CHAINS = 200

_CONTINENTS = {"Asia": ["Asian"], "Europe": ["European"], "Africa": ["African"], "Americas": ["America", "American"], "Oceania": ["Australia", "Pacific"]}

# US state capitals (public knowledge), for city -> state -> capital chains from gensim's city-in-state section.
_STATE_CAPITALS = {
    "Alabama": "Montgomery", "Alaska": "Juneau", "Arizona": "Phoenix", "Arkansas": "Little Rock", "California": "Sacramento",
    "Colorado": "Denver", "Connecticut": "Hartford", "Delaware": "Dover", "Florida": "Tallahassee", "Georgia": "Atlanta",
    "Hawaii": "Honolulu", "Idaho": "Boise", "Illinois": "Springfield", "Indiana": "Indianapolis", "Iowa": "Des Moines",
    "Kansas": "Topeka", "Kentucky": "Frankfort", "Louisiana": "Baton Rouge", "Maine": "Augusta", "Maryland": "Annapolis",
    "Massachusetts": "Boston", "Michigan": "Lansing", "Minnesota": "Saint Paul", "Mississippi": "Jackson", "Missouri": "Jefferson City",
    "Montana": "Helena", "Nebraska": "Lincoln", "Nevada": "Carson City", "New Hampshire": "Concord", "New Jersey": "Trenton",
    "New Mexico": "Santa Fe", "New York": "Albany", "North Carolina": "Raleigh", "North Dakota": "Bismarck", "Ohio": "Columbus",
    "Oklahoma": "Oklahoma City", "Oregon": "Salem", "Pennsylvania": "Harrisburg", "Rhode Island": "Providence",
    "South Carolina": "Columbia", "South Dakota": "Pierre", "Tennessee": "Nashville", "Texas": "Austin", "Utah": "Salt Lake City",
    "Vermont": "Montpelier", "Virginia": "Richmond", "Washington": "Olympia", "West Virginia": "Charleston",
    "Wisconsin": "Madison", "Wyoming": "Cheyenne",
}
_STATE_ALIASES = {"Saint Paul": ["St. Paul", "St Paul"]}

# Well-known chains, hand-written: (e1, r1, r1 template, r1 phrase, e2, e2 aliases, r2, r2 template, e3, e3 aliases).
_HANDWRITTEN: list[tuple[str, str, str, str, str, list[str], str, str, str, list[str]]] = [
    ("Imagine", "performer", "The song {} was performed by", "the performer of the song {}", "John Lennon", ["Lennon"], "spouse", "The wife of {} was", "Yoko Ono", ["Yoko"]),
    ("the Eiffel Tower", "country-of-landmark", "{} is located in the country of", "the country where {} is located", "France", [], "capital", "The capital of {} is", "Paris", []),
    ("the Colosseum", "country-of-landmark", "{} is located in the country of", "the country where {} is located", "Italy", [], "capital", "The capital of {} is", "Rome", []),
    ("the Statue of Liberty", "country-of-landmark", "{} is located in the country of", "the country where {} is located", "United States", ["USA", "America"], "capital", "The capital of {} is", "Washington", []),
    ("the Great Wall", "country-of-landmark", "{} is located in the country of", "the country where {} is located", "China", [], "capital", "The capital of {} is", "Beijing", ["Peking"]),
    ("the Taj Mahal", "country-of-landmark", "{} is located in the country of", "the country where {} is located", "India", [], "capital", "The capital of {} is", "New Delhi", ["Delhi"]),
    ("Big Ben", "city-of-landmark", "{} is located in the city of", "the city where {} is located", "London", [], "country", "{} is the capital of", "England", ["United Kingdom", "UK", "Britain"]),
    ("the Kremlin", "city-of-landmark", "{} is located in the city of", "the city where {} is located", "Moscow", [], "country", "{} is the capital of", "Russia", []),
    ("the Parthenon", "city-of-landmark", "{} is located in the city of", "the city where {} is located", "Athens", [], "country", "{} is the capital of", "Greece", []),
    ("the Sydney Opera House", "country-of-landmark", "{} is located in the country of", "the country where {} is located", "Australia", [], "capital", "The capital of {} is", "Canberra", []),
    ("Mount Fuji", "country-of-landmark", "{} is located in the country of", "the country where {} is located", "Japan", [], "capital", "The capital of {} is", "Tokyo", []),
    ("the Brandenburg Gate", "country-of-landmark", "{} is located in the country of", "the country where {} is located", "Germany", [], "capital", "The capital of {} is", "Berlin", []),
    ("the Alhambra", "country-of-landmark", "{} is located in the country of", "the country where {} is located", "Spain", [], "capital", "The capital of {} is", "Madrid", []),
    ("the Pyramids of Giza", "country-of-landmark", "{} are located in the country of", "the country where {} are located", "Egypt", [], "capital", "The capital of {} is", "Cairo", []),
    ("Harry Potter", "author", "The {} books were written by", "the author of the {} books", "J. K. Rowling", ["Rowling", "J.K. Rowling"], "nationality", "The nationality of {} is", "British", ["English", "UK", "Britain"]),
    ("Hamlet", "author", "The play {} was written by", "the author of the play {}", "William Shakespeare", ["Shakespeare"], "birthplace", "{} was born in the town of", "Stratford-upon-Avon", ["Stratford"]),
    ("the Mona Lisa", "painter", "{} was painted by", "the painter of {}", "Leonardo da Vinci", ["Leonardo", "da Vinci"], "nationality", "The nationality of {} was", "Italian", ["Italy", "Florentine"]),
    ("the theory of relativity", "developer", "{} was developed by", "the scientist who developed {}", "Albert Einstein", ["Einstein"], "birthplace", "{} was born in the country of", "Germany", ["German"]),
    ("Microsoft", "founder", "{} was founded by", "the founder of {}", "Bill Gates", ["Gates"], "spouse", "The former wife of {} is", "Melinda Gates", ["Melinda"]),
    ("the iPhone", "maker", "{} is made by the company", "the company that makes {}", "Apple", [], "founder", "{} was founded by", "Steve Jobs", ["Jobs", "Steve Wozniak", "Wozniak"]),
    ("Facebook", "founder", "{} was founded by", "the founder of {}", "Mark Zuckerberg", ["Zuckerberg"], "university", "{} studied at the university of", "Harvard", []),
    ("the Beatles", "drummer", "The drummer of {} was", "the drummer of {}", "Ringo Starr", ["Ringo"], "real name", "The real name of {} is", "Richard Starkey", ["Starkey"]),
    ("Star Wars", "director", "The film {} was directed by", "the director of the film {}", "George Lucas", ["Lucas"], "company", "{} founded the company", "Lucasfilm", []),
    ("Jurassic Park", "director", "The film {} was directed by", "the director of the film {}", "Steven Spielberg", ["Spielberg"], "birthplace", "{} was born in the city of", "Cincinnati", []),
    ("the Amazon River", "country-of-river", "{} flows mainly through the country of", "the country {} flows mainly through", "Brazil", [], "language", "The official language of {} is", "Portuguese", []),
    ("the Danube", "mouth", "{} flows into the", "the sea that {} flows into", "Black Sea", [], "bordering country", "A country on the coast of the {} is", "Turkey", ["Romania", "Bulgaria", "Ukraine", "Georgia", "Russia"]),
    ("Romeo and Juliet", "setting", "{} is set in the city of", "the city where {} is set", "Verona", [], "country", "{} is a city in the country of", "Italy", []),
    ("the Louvre", "city-of-landmark", "{} is located in the city of", "the city where {} is located", "Paris", [], "river", "The river that flows through {} is the", "Seine", []),
    ("Buckingham Palace", "city-of-landmark", "{} is located in the city of", "the city where {} is located", "London", [], "river", "The river that flows through {} is the", "Thames", []),
    ("the Vatican", "surrounding-city", "{} is surrounded by the city of", "the city that surrounds {}", "Rome", [], "river", "The river that flows through {} is the", "Tiber", []),
]


def _country_aliases(record: dict[str, Any]) -> list[str]:
    """A country's other names a model may answer with (countryinfo's ``altSpellings``, a JSON list): those of at least four
    letters (not the two-letter codes), other than its name."""
    return [s for s in _listed(record.get("altSpellings")) if len(s) >= 4 and s != record["name"]]


def _listed(value: Any) -> list[str]:
    """The non-empty strings of a countryinfo list field (a JSON list: ``provinces``, ``languages``); ``[]`` where it is missing."""
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


def _unaccented(name: str) -> list[str]:
    """``[name without its accents]`` where that differs ("Brasilia" for "Brasília"), else ``[]``: a model may write either."""
    import unicodedata

    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return [plain] if plain != name else []


def _province_chains(countries: list[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` province -> country -> capital queries, a seeded sample (in data order) of all of countryinfo's.

    Left out: a province named as its country, its capital or any country ("Georgia" of the United States), and names
    with a parenthesis ("Amurskaya (Blagoveshchensk)"), which no prompt would write.
    """
    import numpy as np

    names = {country["name"] for country in countries}
    chains = []
    for country in countries:
        name, capital = country["name"], country.get("capital") or ""
        if not capital or not capital[0].isalpha():
            continue
        aliases = _country_aliases(country)
        for province in _listed(country.get("provinces")):
            if province in (capital, name) or province in names or "(" in province:
                continue
            chains.append(_query(province, "province-of", name, aliases, "country-capital", capital, _unaccented(capital)))
    keep = np.sort(np.random.default_rng(seed).choice(len(chains), size=min(n, len(chains)), replace=False))
    return [chains[i] for i in keep]


def relation_pair(record: dict[str, Any]) -> str:
    """A query's relation pair ``r1>r2`` (``capital-of>continent``), or ``handwritten`` for a hand-written chain."""
    return f"{record['r1']}>{record['r2']}" if record["r1"] in RELATIONS else "handwritten"


def _query(e1: str, r1: str, e2: str, e2_aliases: list[str], r2: str, e3: str, e3_aliases: list[str]) -> dict[str, Any]:
    return dict(e1=e1, r1=r1, e2=e2, r2=r2, e3=e3, e2_aliases=e2_aliases, e3_aliases=e3_aliases,
                r1_template=RELATIONS[r1][0], r1_phrase=RELATIONS[r1][1], r2_template=RELATIONS[r2][0])


def packaged_two_hop_records() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every packaged two-hop query as a raw record, and the carrier packages' versions."""
    countries, country_version = _countries()
    sections, gensim_version = gensim_analogy_pairs()
    adjectives = {k.lower(): v for k, v in sections.get("gram6-nationality-adjective", {}).items()}
    currencies = {k.lower(): v for k, v in sections.get("currency", {}).items()}
    records: list[dict[str, Any]] = []
    for country in countries:
        name, capital = country["name"], country.get("capital") or ""
        if not capital or not capital[0].isalpha():
            continue
        aliases = _country_aliases(country)
        region = country.get("region") or ""
        if region in _CONTINENTS:
            records.append(_query(capital, "capital-of", name, aliases, "continent", region, _CONTINENTS[region]))
        demonym = country.get("demonym") or ""
        if demonym:
            others = [a for a in {adjectives.get(name.lower(), "")} if a and a != demonym]
            records.append(_query(capital, "capital-of", name, aliases, "demonym", demonym, others))
        currency = currencies.get(name.lower()) or next((currencies[a.lower()] for a in aliases if a.lower() in currencies), "")
        if currency:
            records.append(_query(capital, "capital-of", name, aliases, "currency", currency, []))
    for city, state in sorted(sections.get("city-in-state", {}).items()):
        capital = _STATE_CAPITALS.get(state)
        if capital and capital != city:
            records.append(_query(city, "state-of-city", state, [], "state-capital", capital, _STATE_ALIASES.get(capital, [])))
    records += _province_chains(countries, PROVINCE_CHAINS)
    for e1, r1, t1, p1, e2, a2, r2, t2, e3, a3 in _HANDWRITTEN:
        records.append(dict(e1=e1, r1=r1, e2=e2, r2=r2, e3=e3, e2_aliases=a2, e3_aliases=a3, r1_template=t1, r1_phrase=p1, r2_template=t2))
    return records, {"countryinfo": country_version, "gensim": gensim_version}


def two_hop_dataset(records: list[dict[str, Any]], provenance: dict[str, Any], where: str) -> TextDataset:
    """Validated queries as a dataset: texts are the source prompts, labels the relation pair ``r1>r2``, records the queries."""
    queries = parse_queries(records, where)
    return TextDataset([q.source_prompt for q in queries], [f"{q.r1}>{q.r2}" for q in queries], provenance,
                       records=[q.model_dump() for q in queries])


@packaged_dataset("two-hop-queries")
def packaged_two_hop(n: int | None = None, seed: int = 0) -> TextDataset:
    """Two-hop queries from countryinfo and gensim facts plus hand-written chains; ``n`` of them (None: all), keeping each relation pair's share.

    Relation pairs: capital-of>continent, capital-of>demonym, capital-of>currency
    (countryinfo capitals and regions, gensim currencies and nationality
    adjectives), state-of-city>state-capital (gensim's city-in-state section and
    the US state capitals), province-of>country-capital (a seeded sample of
    :data:`PROVINCE_CHAINS` of countryinfo's provinces: "The capital of the country
    where the province Bourgogne is located is"), and the hand-written chains
    ("The wife of the performer of the song Imagine was").
    """
    records, versions = packaged_two_hop_records()
    if n is not None:
        if not 1 <= n <= len(records):
            raise UserError(f"two-hop-queries: n must be between 1 and {len(records)}, got {n}")
        pairs = [relation_pair(r) for r in records]
        records = [records[i] for i in stratified_indices(pairs, n, seed)]
    provenance = {"source": "packaged", "dataset": "two-hop-queries", "distributions": versions, "n": n, "seed": seed,
                  "licence": "countryinfo: MIT; gensim test data: LGPL-2.1; hand-written chains and US state capitals: layerbench (Apache-2.0)"}
    return two_hop_dataset(records, provenance, "packaged data set 'two-hop-queries'")


def _name_list(value: Any) -> list[str]:
    """Aliases as a list: a list already (JSON lines), or its Python/JSON text (a CSV cell); empty for a missing cell."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value) if value.strip() else []
        except (ValueError, SyntaxError):
            value = [value]
    if value is None or (isinstance(value, float) and value != value):  # NaN from an empty CSV cell
        return []
    return [str(v) for v in value]


@ROW_FORMATS.register("two-hop-queries")
def two_hop_rows(frame: pd.DataFrame, where: str) -> TextDataset:
    """A table whose rows carry the fields of :class:`TwoHopQuery` (aliases as lists, or their text in a CSV)."""
    records = []
    for row in frame.to_dict("records"):
        record = {k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}  # an empty optional cell is absent
        for key in ("e2_aliases", "e3_aliases"):
            if key in record:
                record[key] = _name_list(record[key])
        records.append(record)
    return two_hop_dataset(records, {}, where)


# The columns of Biran et al.'s datasets/two_hop.csv that a query is built from.
_HTL_COLUMNS = ("e1_label", "e2_label", "e3_label", "r1_template", "r2_template", "e2_aliases", "e3_aliases")


@ROW_FORMATS.register("hopping-too-late")
def hopping_too_late_rows(frame: pd.DataFrame, where: str) -> TextDataset:
    """The two-hop CSV Biran et al. (2024) released, as queries.

    Their templates are noun phrases ("the currency of {}"); the source prompt
    is r2's phrase around r1's phrase plus " is", and a single-hop check is a
    phrase plus " is". So here ``r1_phrase`` is their r1 template, ``r2_phrase``
    their r2 template, and the two prompt templates are their phrases plus
    " is": the prompts equal theirs (their protocol leaves them as written;
    ours capitalizes the first letter). A ``source_prompt`` column, where the
    file has one, is taken as the composed prompt. Relations are named by
    ``r1_type`` / ``r2_type`` (Wikidata labels) where present, else by their ids.
    """
    missing = [c for c in _HTL_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{where}: not the Hopping Too Late format, it lacks {', '.join(missing)}; its fields: {', '.join(map(str, frame.columns))}")
    records = []
    for row in frame.to_dict("records"):
        records.append(dict(
            e1=str(row["e1_label"]), e2=str(row["e2_label"]), e3=str(row["e3_label"]),
            r1=str(row.get("r1_type") or row.get("r1") or "r1"), r2=str(row.get("r2_type") or row.get("r2") or "r2"),
            e2_aliases=_name_list(row["e2_aliases"]), e3_aliases=_name_list(row["e3_aliases"]),
            r1_phrase=str(row["r1_template"]), r1_template=f"{row['r1_template']} is", r2_template=f"{row['r2_template']} is",
            r2_phrase=str(row["r2_template"]), prompt=str(row["source_prompt"]) if isinstance(row.get("source_prompt"), str) else None,
        ))
    return two_hop_dataset(records, {"format": "Biran et al. 2024, datasets/two_hop.csv"}, where)
