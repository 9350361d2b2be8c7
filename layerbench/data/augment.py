"""Seeded character- and word-level noise: the augmented views the invariance metrics compare.

A view keeps a text's meaning and changes its surface the way real typing
noise does: keyboard typos, swapped, inserted and deleted letters, and words
split in two (the noise families of NLPAug's character augmenters, which
Skean et al. use). Every view is a plain string, so it goes through the same
capture (and activation cache) as any text.

Determinism: view v of a text depends only on (seed, v, the text), never on
where the text sits in a data set, so the same text gets the same views in
every run, subset and task.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

OPERATIONS = ("typo", "swap", "insert", "delete", "split")

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
# Letters adjacent on a QWERTY keyboard (same row and the rows above and below).
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_KEYBOARD_ROWS):
    for _c, _key in enumerate(_row):
        _near = [_row[j] for j in (_c - 1, _c + 1) if 0 <= j < len(_row)]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_KEYBOARD_ROWS):
                _near += [_KEYBOARD_ROWS[_other][j] for j in (_c - 1, _c, _c + 1) if 0 <= j < len(_KEYBOARD_ROWS[_other])]
        _NEIGHBOURS[_key] = "".join(_near)

_WORD = re.compile(r"[A-Za-z]{2,}")


def _text_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _edit_word(word: str, operation: str, rng: np.random.Generator) -> str:
    """One ``operation`` applied to ``word`` (two or more letters)."""
    i = int(rng.integers(len(word)))
    if operation == "typo":
        near = _NEIGHBOURS.get(word[i].lower(), "")
        if not near:
            return word
        letter = near[int(rng.integers(len(near)))]
        return word[:i] + (letter.upper() if word[i].isupper() else letter) + word[i + 1 :]
    if operation == "swap":
        i = min(i, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if operation == "insert":
        return word[:i] + chr(ord("a") + int(rng.integers(26))) + word[i:]
    if operation == "delete":
        return word[:i] + word[i + 1 :]
    if operation == "split":
        cut = 1 + int(rng.integers(len(word) - 1))
        return word[:cut] + " " + word[cut:]
    raise ValueError(f"unknown augmentation '{operation}'; use one of {', '.join(OPERATIONS)}")


def augment(text: str, seed: int, rate: float = 0.15, operations: Sequence[str] = OPERATIONS) -> str:
    """``text`` with seeded typing noise in about ``rate`` of its words (at least one word).

    Words (runs of two or more letters) are chosen at random and each gets one
    operation drawn from ``operations``. Texts without such words come back unchanged.
    The same (text, seed, rate, operations) always gives the same string.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    rng = np.random.default_rng([seed, _text_seed(text)])
    words = list(_WORD.finditer(text))
    if not words:
        return text
    n_edits = max(1, int(round(rate * len(words))))
    chosen = sorted(rng.choice(len(words), size=min(n_edits, len(words)), replace=False))
    pieces, last = [], 0
    for index in chosen:
        match = words[index]
        word = edited = match.group()
        for _ in range(8):  # a swap of two equal letters changes nothing: draw again
            edited = _edit_word(word, operations[int(rng.integers(len(operations)))], rng)
            if edited != word:
                break
        pieces += [text[last : match.start()], edited]
        last = match.end()
    return "".join(pieces) + text[last:]


def make_views(texts: Sequence[str], n_views: int, seed: int = 0, rate: float = 0.15) -> list[list[str]]:
    """``n_views`` augmented views of every text: ``views[i][v]`` is view v of ``texts[i]``.

    View v of a text is :func:`augment` with seed derived from (``seed``, v),
    so the first two of eight views are the same as the two of two.
    """
    if n_views < 1:
        raise ValueError(f"n_views must be at least 1, got {n_views}")
    view_seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_views)]
    return [[augment(text, view_seed, rate) for view_seed in view_seeds] for text in texts]


def noise_prefix(text: str, seed: int) -> str:
    """The input-noise prefix of Jin et al. (2024): one letter, ``a`` or ``b`` at random, three times (``"aaa"``).

    The authors draw it with an unseeded ``np.random.choice(2)`` per text;
    here it depends only on (seed, text), so a run is repeatable. It is glued
    to the text with no space, as in their code.
    """
    letter = "ab"[int(np.random.default_rng([seed, _text_seed(text)]).integers(2))]
    return letter * 3
