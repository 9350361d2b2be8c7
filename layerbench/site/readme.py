"""The README's leaderboard and layer-selection tables, written from result folders: the numbers the site shows, as Markdown.

``python -m layerbench.site.readme README.md results`` rewrites the blocks between :data:`START` and :data:`END` and
between :data:`SELECTION_START` and :data:`SELECTION_END` (``make site`` runs it); ``tests/test_docs.py`` checks that the committed README equals what the committed
``results/`` give, so no number in the table is typed by hand.
"""
from __future__ import annotations

import sys
from pathlib import Path

from layerbench.site import view
from layerbench.site.index import IndexCell, index_columns, index_rows
from layerbench.site.render import fmt

START = "<!-- leaderboard table: written by `make site` (python -m layerbench.site.readme README.md results); do not edit -->"
END = "<!-- end of the leaderboard table -->"
SELECTION_START = "<!-- layer selection table: written by `make site` (python -m layerbench.site.readme README.md results); do not edit -->"
SELECTION_END = "<!-- end of the layer selection table -->"
# The methods the README's layer-selection table lists (the site lists them all), in order of regret.
README_METHODS = ("oracle", "learned-depth", "learned-lomo", "learned-lofo", "last", "middle", "li2025", "valeriani2023", "cheng2025", "lidar-max",
                  "dime-max", "infonce-min", "intrinsic_dimension-min")


def _score(cell: IndexCell) -> str:
    """A cell "value (low–high)" to three decimals, its 95% interval where it has one, and the naive maximum after it
    ("[naive 0.834]") beside a selection-honest best; an em dash where there is no value."""
    if cell.status != "value":
        return "—"
    return (fmt(cell.value, 3) + (f" ({fmt(cell.interval[0], 3)}–{fmt(cell.interval[1], 3)})" if cell.interval else "")
            + (f" [naive {fmt(cell.naive, 3)}]" if cell.naive is not None else ""))


def _with_n(cell: IndexCell) -> str:
    """A headline cell with what it rests on: "value (interval), n", "withheld: n=8 < 20", "none, 0 of 3 tasks", or an em dash."""
    if cell.status == "withheld":  # too few items to rank by: the index says so in the cell
        return f"withheld: {cell.n}"
    if cell.status == "not run":
        return "—"
    return f"{_score(cell) if cell.status == 'value' else cell.shown}, {cell.n}"


def markdown_table(data: view.SiteData) -> str:
    """The ranked models of the index (:func:`layerbench.site.index.index_rows`) as a Markdown table, smallest first.

    Columns: model (architecture, layers); probe and MTEB best and last layer's score (means over the family's tasks
    under our protocol, each with its 95% interval where every task has one) and the best layer's depth; then every
    family's headlines under our protocol as the index shows them (:func:`~layerbench.site.index.index_columns`: the
    concept depth, the back-patching fix rate, IC AUROC, the latent-language decision depth and English detour), each
    with its interval and its n.
    """
    rows = sorted((r for r in index_rows(data) if r["apart"] is None), key=lambda r: (r["parameters"] or 0, r["model"]))
    ours = [column for column in index_columns(data.schema) if "headline" in column and column["protocol"] == "layerbench"]
    rests_on = list(dict.fromkeys(column["headline"].rests_on for column in ours))
    header = ("| model (architecture, layers) | probe best | probe last | probe best depth | MTEB best | MTEB last | MTEB best depth | "
              + " | ".join(column["title"] for column in ours) + " |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in rows:
        latest = view.latest_manifest(data, row["model"], row["revision"])
        architecture = latest.model.model_type if latest and latest.model.model_type else "?"
        name = row["model"].split("/")[-1] + (f"@{row['revision']}" if row["revision"] else "")
        cells = [f"{name} ({architecture}, {row['layers']})", _score(row["probe_best"]), _score(row["probe_last"]), fmt(row["probe_depth"].value, 2),
                 _score(row["mteb_best"]), _score(row["mteb_last"]), fmt(row["mteb_depth"].value, 2)]
        cells += [_with_n(row[column["id"]]) for column in ours]
        lines.append("| " + " | ".join(cells) + " |")
    tasks = {r["probe_last"].n for r in rows} | {r["mteb_last"].n for r in rows}  # task counts (the best cells count items)
    lines.append("")
    titles = [column["title"] for column in ours]
    lines.append(f"Means over each family's tasks with item records ({', '.join(sorted(t for t in tasks if t))}) under our protocol, 95% "
                 "intervals in parentheses. The best layer is chosen on half of each task's items and scored on the other half (50 "
                 "halvings, both ways; `layerbench.honest_best`), its depth is that of the layer picked most often, and the naive "
                 "maximum (the layer chosen and scored on the same items, biased upward) follows in brackets; "
                 f"{', '.join(titles[:-1])} and {titles[-1]} with the {', '.join(rests_on[:-1])} and {rests_on[-1]} they rest on "
                 "(and on how many of the family's tasks, where some have none).")
    return "\n".join(lines)


def selection_table(data: view.SiteData) -> str:
    """The layer-selection methods of :data:`README_METHODS` scored on the result folders (the site's "Layer selection
    without labels" page, :attr:`~layerbench.site.view.SiteData.selection`) as a Markdown table, with the page's verdict."""
    from layerbench.selection.report import column_interval
    from layerbench.site.selection_page import verdict

    result = data.selection
    if result.picks.empty:
        return "No result folder has label-free metrics and task scores at every layer."
    overall = result.summary.set_index("method")
    family = result.by_family.set_index(["family", "method"]).regret
    families = sorted(result.by_family.family.unique())
    lines = ["| method | regret (95% CI) | gain over the last layer (95% CI) | " + " | ".join(f"{f} regret" for f in families) + " | beats the last |",
             "|---|---|---|" + "---|" * len(families) + "---|"]
    for method in sorted((m for m in README_METHODS if m in overall.index), key=lambda m: overall.loc[m, "regret"]):
        row = overall.loc[method]
        lines.append(f"| {method} | {column_interval(row, 'regret')} | {column_interval(row, 'gain')} | " + " | ".join(f"{family[(f, method)]:+.3f}" for f in families)
                     + f" | {int(row.beats_last)}/{int(row.curves)} |")
    lines += ["", verdict(result.summary, result.by_family, data.schema["pages"]["selection"]["verdict"])]
    return "\n".join(lines)


def updated_readme(text: str, table: str, start_marker: str = START, end_marker: str = END) -> str:
    """``text`` with the block between ``start_marker`` and ``end_marker`` (default: the leaderboard table's) replaced by ``table``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"the README has no block between '{start_marker}' and '{end_marker}'")
    return text[: start + len(start_marker)] + "\n" + table + "\n" + text[end:]


def updated_blocks(text: str, data: view.SiteData) -> str:
    """``text`` with both generated blocks (the leaderboard table, the layer-selection table) rewritten from ``data``."""
    text = updated_readme(text, markdown_table(data))
    return updated_readme(text, selection_table(data), SELECTION_START, SELECTION_END)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m layerbench.site.readme README.md RESULTS [RESULTS ...]", file=sys.stderr)
        return 2
    readme = Path(argv[0])
    text = readme.read_text()
    new = updated_blocks(text, view.read_site([Path(p) for p in argv[1:]]))
    if new != text:
        readme.write_text(new)
        print(f"updated the leaderboard and layer-selection tables in {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
