"""How many queries of each two-hop relation pair a decoder leaves to back-patching: the queries whose two hops it knows
(no shortcut gives the answer, the sweep's filter) and of those, how many it composes wrong (the fix rate's n).

Not a speed benchmark: the measurement behind the packaged set's make-up (README, "Back-patching"). The capital chains
leave SmolLM2 few wrong queries, because it knows few capitals' countries and a capital's name alone gives its
continent or language away (the entity shortcut); ``--language-chain`` adds the candidate that showed it, capital ->
country -> official language (CLDR's English names of countryinfo's language codes), which the set does not keep.

Run: ``python benchmarks/two_hop_yield.py [--model smollm2-135m-q4 ...] [--protocol layerbench biran2024] [--language-chain]``.
"""
from __future__ import annotations

import argparse
import os
from collections import Counter

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from layerbench import load_model
from layerbench.data.packaged import _countries
from layerbench.data.two_hop import RELATIONS, _country_aliases, _listed, packaged_two_hop_records, parse_queries, relation_pair
from layerbench.evaluators.backpatch import run_checks
from layerbench.families.backpatch import BackpatchSettings

LANGUAGE = ("The official language of {} is", "the official language of {}")


def language_chains() -> list[dict]:
    """capital -> country -> official language for every countryinfo country with a capital and a language CLDR names
    (every listed language counts as an answer)."""
    from babel import Locale

    english = Locale("en").languages
    records = []
    for country in _countries()[0]:
        capital = country.get("capital") or ""
        names = [english[code] for code in _listed(country.get("languages")) if code in english]
        if isinstance(capital, str) and capital[:1].isalpha() and names:
            records.append(dict(e1=capital, r1="capital-of", e2=country["name"], r2="language", e3=names[0], e2_aliases=_country_aliases(country),
                                e3_aliases=names[1:], r1_template=RELATIONS["capital-of"][0], r1_phrase=RELATIONS["capital-of"][1],
                                r2_template=LANGUAGE[0]))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["smollm2-135m-q4", "gemma3-270m-base-q4"])
    parser.add_argument("--protocol", nargs="+", default=["layerbench"], choices=["layerbench", "biran2024"])
    parser.add_argument("--language-chain", action="store_true", help="add the capital -> country -> language candidate")
    args = parser.parse_args()
    records = packaged_two_hop_records()[0] + (language_chains() if args.language_chain else [])
    queries = parse_queries(records, "two_hop_yield")
    pairs = [relation_pair(r) for r in records]
    sizes = Counter(pairs)
    for name in args.model:
        handle = load_model(name, device="cpu")
        for protocol in args.protocol:
            checks = run_checks(handle, queries, BackpatchSettings(protocol=protocol))
            known = checks["first_hop"] & checks["second_hop"] & ~checks["entity_shortcut"] & ~checks["relation_shortcut"]
            wrong = known & ~checks["composition"]
            print(f"{name}, {protocol}: {int(known.sum())} queries with both hops known, {int(wrong.sum())} of them composed wrong")
            print(f"  {'relation pair':32} {'queries':>8} {'first hop':>10} {'both hops':>10} {'wrong':>6}")
            for pair, size in sizes.most_common():
                at = [i for i, p in enumerate(pairs) if p == pair]
                print(f"  {pair:32} {size:8d} {int(checks['first_hop'][at].sum()):10d} {int(known[at].sum()):10d} {int(wrong[at].sum()):6d}")


if __name__ == "__main__":
    main()
