"""Augmented views: seeded, plain strings, real noise, independent of a text's position."""
from __future__ import annotations

import pytest

from layerbench.data import load_packaged
from layerbench.data.augment import OPERATIONS, augment, make_views

HEADLINES = load_packaged("bbc-news", {"field": "headline"}).texts[:200]


def test_the_same_seed_gives_the_same_views_and_another_seed_other_views():
    first = make_views(HEADLINES, 8, seed=0)
    assert first == make_views(HEADLINES, 8, seed=0)
    other = make_views(HEADLINES, 8, seed=1)
    assert sum(a != b for a, b in zip(first, other)) > 190


def test_views_are_noisy_plain_strings_close_to_the_text():
    views = make_views(HEADLINES, 8, seed=0)
    for text, text_views in zip(HEADLINES, views):
        assert len(text_views) == 8 and all(type(v) is str for v in text_views)
        changed = [v for v in text_views if v != text]
        assert len(changed) == 8
        assert all(abs(len(v) - len(text)) <= max(3, len(text) // 5) for v in text_views)
    assert len({v for text_views in views for v in text_views}) > 0.95 * 8 * len(HEADLINES)


def test_a_text_gets_the_same_views_wherever_it_is_and_fewer_views_are_a_prefix():
    alone = make_views([HEADLINES[7]], 8, seed=3)[0]
    assert make_views(HEADLINES[:10], 8, seed=3)[7] == alone
    assert make_views([HEADLINES[7]], 2, seed=3)[0] == alone[:2]


def test_each_operation_edits_as_named():
    text = "Parliament debates the budget tonight"
    for operation in OPERATIONS:
        edited = {augment(text, seed, rate=0.2, operations=[operation]) for seed in range(20)}
        assert text not in edited and len(edited) > 1
        if operation == "split":
            assert all(len(e.split()) == len(text.split()) + 1 for e in edited)
        if operation == "insert":
            assert all(len(e) == len(text) + 1 for e in edited)
        if operation == "delete":
            assert all(len(e) == len(text) - 1 for e in edited)
        if operation in ("swap", "typo"):
            assert all(len(e) == len(text) for e in edited)
    assert augment("42 + 17 = 59", seed=0) == "42 + 17 = 59"  # no word to edit


def test_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        augment("some text", 0, rate=0)
    with pytest.raises(ValueError, match="n_views"):
        make_views(["a text"], 0)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment("some words here", 0, operations=["shout"])
