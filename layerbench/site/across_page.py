"""The page across models: which layer of one model matches which layer of another (rows with an ``other_model``)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from layerbench.site import figures as fig
from layerbench.site.view import SiteData, table

MEASURES = ("cka", "mutual_knn")


def across_page(data: SiteData) -> dict[str, Any]:
    """Per task with rows across models: a table of every ordered pair (how far each layer's best match lies from its own
    relative depth, the mean best match and its shuffled null), each reference model's best-match curves of the others
    (a drop-down picks the measure), and every pair's layer x layer map."""
    schema = data.schema["pages"]["across"]
    figures: dict[str, Any] = {}
    sections = []
    for task, rows in data.across.groupby("task", sort=True):
        models = sorted(set(rows.model) | set(rows.other_model))
        pairs = []
        for (model, other), pair in rows.groupby(["model", "other_model"], sort=True):
            value = pair[pair.layer.isna()].set_index("metric").value
            entry: dict[str, Any] = {"model": model, "other_model": other}
            for measure in MEASURES:
                entry[f"{measure}_gap"] = fig.number(value.get(f"{measure}_best_match_depth_gap"))
                entry[f"{measure}_best"] = fig.number(pair[pair.metric == f"{measure}_best_match"].value.mean())
                entry[f"{measure}_null"] = fig.number(pair[pair.metric == f"{measure}_best_match_null"].value.mean())
            pairs.append(entry)
        plots = []
        for reference in models:
            plot = f"{task}-best-match-in-{reference}".replace("/", "_")
            figures[plot] = best_match_figure(rows[rows.other_model == reference], reference, schema, data.schema["pages"]["depth_axis"])
            plots.append(plot)
        for i, first in enumerate(models):
            for second in models[i + 1:]:
                cells = rows[(rows.model == first) & (rows.other_model == second) & rows.source_layer.notna()]
                if cells.empty:
                    continue
                plot = f"{task}-map-{first}-{second}".replace("/", "_")
                figures[plot] = pair_map(cells, first, second, schema)
                plots.append(plot)
        sections.append({"id": task, "title": schema["section_title"].format(task=task, models=len(models)), "note": schema["section_note"],
                         "table": table(f"pairs-{task}", schema["columns"], pairs, decimals=3), "plots": plots})
    return dict(title=schema["title"], intro=schema["intro"], empty=schema["empty"], sections=sections, figures=figures)


def best_match_figure(rows: pd.DataFrame, reference: str, schema: dict[str, Any], x_title: str) -> dict[str, Any]:
    """Every other model's best-match depth in ``reference`` against its own depth, one curve per model and measure (a
    drop-down picks the measure), over the diagonal of equal relative depth."""
    traces: list[dict[str, Any]] = []
    options: list[tuple[str, list[int], str]] = []
    others = sorted(rows.model.unique())
    for measure in MEASURES:
        shown = []
        for i, model in enumerate(others):
            part = rows[(rows.model == model) & (rows.metric == f"{measure}_best_match_depth")]
            if part.empty:
                continue
            shown.append(len(traces))
            traces.append(fig.trace(part, model, fig.PALETTE[i % len(fig.PALETTE)]))
        options.append((measure, shown, schema["best_match_title"].format(reference=short(reference), measure=measure)))
    diagonal = {"type": "scatter", "mode": "lines", "name": schema["diagonal"], "x": [0, 1], "y": [0, 1], "line": {"dash": "dot", "color": "#5a6273"},
                "hoverinfo": "skip"}
    figure = fig.curve_figure("", [*traces, diagonal], schema["best_match_y_title"].format(reference=short(reference)), x_title)
    figure["layout"]["yaxis"]["range"] = [-0.02, 1.02]
    return fig.with_selector(figure, [(label, shown + [len(traces)], title) for label, shown, title in options], name_axis=False)


def short(model: str) -> str:
    """A model's name without its organisation (``all-MiniLM-L6-v2``), for axis titles."""
    return model.rsplit("/", 1)[-1]


def pair_map(cells: pd.DataFrame, first: str, second: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The layer x layer map of one pair (``first``'s layers across, ``second``'s down), a drop-down picks the measure."""
    section = {"colorbar": "", "x_title": schema["map_x_title"].format(model=short(first)), "y_title": schema["map_y_title"].format(model=short(second))}
    measures = [m for m in MEASURES if (cells.metric == m).any()]
    figures = [fig.source_target_heatmap(cells[cells.metric == m], schema["map_title"].format(first=short(first), second=short(second), measure=m), section)
               for m in measures]
    figure = figures[0]
    figure["data"] = [f["data"][0] for f in figures]
    for trace, measure in zip(figure["data"], measures):
        trace["hovertemplate"] = f"{short(second)} layer %{{y}}, {short(first)} layer %{{x}}: %{{z:.2f}}<extra>{measure}</extra>"
        trace["colorbar"] = {"title": {"text": measure}}
    return fig.with_selector(figure, [(m, [i], f["layout"]["title"]["text"]) for i, (m, f) in enumerate(zip(measures, figures))], name_axis=False)
