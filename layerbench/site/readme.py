"""The README's leaderboard table, written from result folders: the numbers the site's index shows, as Markdown.

``python -m layerbench.site.readme README.md results`` rewrites the block between :data:`START` and :data:`END`
(``make site`` runs it); ``tests/test_docs.py`` checks that the committed README equals what the committed
``results/`` give, so no number in the table is typed by hand.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from layerbench.site import view
from layerbench.site.render import fmt

START = "<!-- leaderboard table: written by `make site` (python -m layerbench.site.readme README.md results); do not edit -->"
END = "<!-- end of the leaderboard table -->"


def _score(row: dict[str, Any], column: str) -> str:
    """A cell "value (low–high)" to three decimals, its 95% interval where it has one; an em dash where there is no value."""
    value = row.get(column)
    if value is None:
        return "—"
    interval = row.get(f"_ci_{column}")
    return fmt(value, 3) + (f" ({fmt(interval[0], 3)}–{fmt(interval[1], 3)})" if interval else "")


def markdown_table(data: view.SiteData) -> str:
    """The ranked models of the index (:func:`layerbench.site.view.index_rows`) as a Markdown table, smallest first.

    Columns: model (architecture, layers); probe and MTEB best and last layer's score (means over the family's tasks
    under our protocol, each with its 95% interval where every task has one) and the best layer's depth; concept depth,
    back-patching fix rate, IC AUROC and the latent-language decision depth, each with its interval and its n.
    """
    rows = sorted((r for r in view.index_rows(data) if r["apart"] is None), key=lambda r: (r["parameters"] or 0, r["model"]))
    header = ("| model (architecture, layers) | probe best | probe last | probe best depth | MTEB best | MTEB last | MTEB best depth "
              "| concept depth | fix rate | IC AUROC | decision depth |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in rows:
        latest = view.latest_manifest(data, row["model"], row["revision"])
        architecture = latest.model.model_type if latest and latest.model.model_type else "?"
        name = row["model"].split("/")[-1] + (f"@{row['revision']}" if row["revision"] else "")
        cells = [f"{name} ({architecture}, {row['layers']})", _score(row, "probe_best"), _score(row, "probe_last"), fmt(row.get("probe_depth"), 2),
                 _score(row, "mteb_best"), _score(row, "mteb_last"), fmt(row.get("mteb_depth"), 2)]
        for column in ("concept_depth", "fix_rate", "ic_auroc", "decision_depth"):
            if row.get(column) == "withheld":  # too few items to rank by: the index says so in the cell
                cells.append(f"withheld: {row[f'_n_{column}']}")
            else:
                cells.append(f"{_score(row, column)}, {row[f'_n_{column}']}" if row.get(column) is not None else "—")
        lines.append("| " + " | ".join(cells) + " |")
    tasks = {r["_n_probe_best"] for r in rows} | {r["_n_mteb_best"] for r in rows}
    lines.append("")
    lines.append(f"Means over each family's tasks ({', '.join(sorted(t for t in tasks if t))}) under our protocol, 95% intervals in "
                 "parentheses; concept depth, fix rate, IC AUROC and decision depth with the items, queries, paths and prompts they rest on "
                 "(and on how many of the family's tasks, where some have none).")
    return "\n".join(lines)


def updated_readme(text: str, table: str) -> str:
    """``text`` with the block between :data:`START` and :data:`END` replaced by ``table``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no block between '{START}' and '{END}'")
    return text[: start + len(START)] + "\n" + table + "\n" + text[end:]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m layerbench.site.readme README.md RESULTS [RESULTS ...]", file=sys.stderr)
        return 2
    readme = Path(argv[0])
    text = readme.read_text()
    new = updated_readme(text, markdown_table(view.read_site([Path(p) for p in argv[1:]])))
    if new != text:
        readme.write_text(new)
        print(f"updated the leaderboard table in {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
