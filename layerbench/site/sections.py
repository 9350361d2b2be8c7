"""The sections of a model page: which figures it shows, in which order, under which titles (all from the presentation schema)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from layerbench.analysis import layer_rows
from layerbench.metrics import list_metrics
from layerbench.site import figures as fig


def model_sections(rows: pd.DataFrame, families: dict[str, str], mains: dict[str, str | None], schema: dict[str, Any],
                   figures: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """The figures of one model's page, grouped in sections; fills ``figures`` (plot id -> Plotly figure).

    First the tasks x depth heat map; then per family (in the schema's order) a
    section of each task's score curves and one of its label-free metric
    curves; then the schema's special sections (heat maps of patched layers,
    curves per subset).
    """
    pages = schema["pages"]["model"]
    axis = schema["pages"]["depth_axis"]
    units = {info.name: info.unit for info in list_metrics()}
    not_scores = tuple(schema["not_scores"])
    sections = []
    heatmap = fig.depth_heatmap(rows, mains, pages["heatmap"]["figure_title"], axis)
    if heatmap is not None:
        figures[f"{prefix}-depth-heatmap"] = heatmap
        sections.append({"id": "tasks-by-depth", "title": pages["heatmap"]["title"], "plots": [f"{prefix}-depth-heatmap"], "wide": True,
                         "note": pages["heatmap"]["note"]})
    per_layer = layer_rows(rows)
    by_task = dict(iter(per_layer.groupby("task", sort=False)))
    present = sorted(set(families.get(t, "other") for t in by_task))
    order = [f for f in schema["families"] if f in present] + [f for f in present if f not in schema["families"]]
    for family in order:
        score_plots, metric_plots = [], []
        for task in sorted(t for t in by_task if families.get(t, "other") == family):
            task_rows = by_task[task]
            main = mains.get(task)
            curves = dict(iter(task_rows.groupby(["metric", "subset"], sort=False)))  # (metric, subset) -> its rows, in row order
            scores = [m for m in sorted(task_rows.metric.unique()) if m not in units and not m.startswith(not_scores)]
            if scores:  # a drop-down picks the score; the main score first, with the baselines it is read against
                scores.sort(key=lambda m: m != main)
                keys = [key for metric in scores for key in curves if key[0] == metric]
                traces = [fig.trace(curves[key], f"{key[0]} ({key[1]})", fig.PALETTE[i % len(fig.PALETTE)]) for i, key in enumerate(keys)]
                baselines = fig.baseline_lines(rows[rows.task == task], schema.get("baselines", {}))
                options = [(metric, [i for i, key in enumerate(keys) if key[0] == metric] + (list(range(len(keys), len(keys) + len(baselines))) if metric == main else []),
                            pages["scores_figure_title"].format(task=task, metric=metric)) for metric in scores]
                plot = f"{prefix}-{task}-scores"
                figures[plot] = fig.with_selector(fig.curve_figure("", traces + baselines, "", axis), options)
                score_plots.append(plot)
            metrics = [m for m in sorted(task_rows.metric.unique()) if m in units]
            if metrics:  # one metric at a time, named on the axis with its unit
                by_metric = dict(iter(task_rows[task_rows.metric.isin(metrics)].groupby("metric", sort=False)))
                traces = [fig.trace(by_metric[m], m, fig.PALETTE[i % len(fig.PALETTE)]) for i, m in enumerate(metrics)]
                options = [(f"{m} ({units[m]})", [i], pages["metrics_figure_title"].format(task=task, metric=m)) for i, m in enumerate(metrics)]
                plot = f"{prefix}-{task}-metrics"
                figures[plot] = fig.with_selector(fig.curve_figure("", traces, "", axis), options)
                metric_plots.append(plot)
        if score_plots:
            sections.append({"id": f"family-{family}", "title": pages["scores_title"].format(family=family), "plots": score_plots, "note": ""})
        if metric_plots:
            sections.append({"id": f"family-{family}-metrics", "title": pages["metrics_title"].format(family=family), "plots": metric_plots, "note": ""})
    for section in schema["sections"]:
        build = {"heatmap": heatmap_sections, "subset_curves": subset_curve_sections, "metric_curves": metric_curve_sections}[section["kind"]]
        sections += build(rows, section, figures, prefix, axis)
    return sections


def heatmap_sections(rows: pd.DataFrame, section: dict[str, Any], figures: dict[str, Any], prefix: str, axis: str) -> list[dict[str, Any]]:
    """Per task with rows of ``section["metric"]`` that have a source layer: a heat map (source x target layer) per subset."""
    patched = rows[(rows.metric == section["metric"]) & rows.source_layer.notna()]
    sections = []
    for task in sorted(patched.task.unique()):
        plots, empty = [], []
        for subset in sorted(patched[patched.task == task].subset.unique()):
            cells = patched[(patched.task == task) & (patched.subset == subset)]
            if cells.value.isna().all():  # no item in this group (e.g. no query the model got right unpatched)
                empty.append(subset)
                continue
            plot = f"{prefix}-{task}-heat-{section['metric']}-{subset}"  # a task may have maps of several metrics
            figures[plot] = fig.source_target_heatmap(cells, f"{task}: {subset} (n={int(cells.n.iloc[0])})", section)
            plots.append(plot)
        sections.append({"id": f"{section['id']}-{task}", "title": section["title"].format(task=task), "plots": plots,
                         "note": section["note"] + (f" No query in: {', '.join(empty)}." if empty else "")})
    return sections


def subset_curve_sections(rows: pd.DataFrame, section: dict[str, Any], figures: dict[str, Any], prefix: str, axis: str) -> list[dict[str, Any]]:
    """Per task with any of ``section["metrics"]``: a plot per metric with one curve per subset, in the section's colours."""
    curves = layer_rows(rows[rows.metric.isin(section["metrics"])])
    sections = []
    for task in sorted(curves.task.unique()):
        plots = []
        for metric in section["metrics"]:
            part = curves[(curves.task == task) & (curves.metric == metric)]
            if part.empty:
                continue
            traces = [fig.trace(part[part.subset == s], s, color) for s, color in section["subsets"].items() if (part.subset == s).any()]
            plot = f"{prefix}-{task}-{metric}"
            figures[plot] = fig.curve_figure(f"{task}: {metric}", traces, section["y_title"], axis)
            plots.append(plot)
        sections.append({"id": f"{section['id']}-{task}", "title": section["title"].format(task=task), "plots": plots, "note": section["note"]})
    return sections


def metric_curve_sections(rows: pd.DataFrame, section: dict[str, Any], figures: dict[str, Any], prefix: str, axis: str) -> list[dict[str, Any]]:
    """Per task with metrics named ``section["prefix"]...``: a plot per subset with one curve per such metric, the section's
    ``first`` metrics drawn first in its colours and shown, the others after them, shown from the legend."""
    curves = layer_rows(rows[rows.metric.str.startswith(section["prefix"])])
    sections = []
    for task in sorted(curves.task.unique()):
        mine = curves[curves.task == task]
        names = [m for m in section["first"] if (mine.metric == m).any()] + sorted(set(mine.metric) - set(section["first"]))
        plots = []
        for subset in sorted(mine.subset.unique()):
            part = mine[mine.subset == subset]
            traces = [fig.trace(part[part.metric == m], m.removeprefix(section["prefix"]), section["colors"].get(m, fig.PALETTE[i % len(fig.PALETTE)]),
                                visible=m in section["first"]) for i, m in enumerate(names) if (part.metric == m).any()]
            plot = f"{prefix}-{task}-{section['id']}-{subset}"
            figures[plot] = fig.curve_figure(section["figure_title"].format(task=task, subset=subset), traces, section["y_title"], axis)
            plots.append(plot)
        sections.append({"id": f"{section['id']}-{task}", "title": section["title"].format(task=task), "plots": plots, "note": section["note"]})
    return sections
