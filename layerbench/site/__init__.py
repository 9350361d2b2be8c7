"""The static leaderboard site: a pure function of result folders (rows and run manifests), like HELM's of its JSON.

``build_site(["results"], "site")`` writes::

    site/index.html            one row per model, headline numbers per family
    site/models/<slug>.html    every task's layer curves, back-patching heat maps, IC curves, provenance
    site/tasks.html            one row per task; site/tasks/<task>.html overlays every model's curve
    site/metrics.html          how well each label-free metric predicts the best layer
    site/data/results.{csv,parquet}
    site/assets/               plotly.min.js (from the plotly package), site.js, site.css

Everything a page needs is in the folder, so it opens from ``file://`` and
from any static host with no network. Figures are Plotly JSON embedded in
the page; the templates are Jinja2 (``leaderboard/templates``).

A task run under a paper's protocol or at another capture site is its own
entry, named with its variant suffix (``mteb-lee-sts@<protocol>``,
``concept-capitals@normed``): its curves, best layer and gain sit beside
ours. The index averages our protocol's tasks per family and shows the paper
protocols' headline numbers in their own columns.

What the pages show is declared in ``leaderboard/schema.yaml`` (section
order, special sections, index and summary columns); what is known about a
task (its family and main score) comes from the run manifests in the result
folders, never from the task specs installed where the site is built, so a
results folder copied to another machine renders the same there.
"""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from layerbench.analysis import best_layer, layer_rows, main_metrics, metric_predicts_best_layer, summary
from layerbench.config import shipped_folder
from layerbench.errors import UserError
from layerbench.results import load_results, model_slug, read_manifests
from layerbench.specs.protocols import base_task, variant_suffix

PARTS = shipped_folder("leaderboard")  # what the published site is made of: schema.yaml, templates/, static/


def presentation() -> dict[str, Any]:
    """The presentation schema (``schema.yaml``): section order, special sections, index and summary columns."""
    return yaml.safe_load((PARTS / "schema.yaml").read_text())


def _columns(declared: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """A schema's column list as the table template takes it: (key, title, is_text)."""
    return [(c["id"], c["title"], bool(c.get("text"))) for c in declared]
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def _number(value: Any) -> float | None:
    """A JSON-safe number: NaN, infinities and <NA> become null (JSON has no NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any) -> str:
    """Table cell text: numbers with 4 significant digits (integers as they are), missing values as an em dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}" if abs(float(value)) < 1e5 else f"{float(value):,.0f}"
    return str(value)


def task_info(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """What the runs recorded about each task (by its name without variant suffix): ``family`` and ``main_score``, the latest run's."""
    info: dict[str, dict[str, Any]] = {}
    for runs in manifests.values():
        for run in runs:
            for task, entry in run.get("tasks", {}).items():
                if isinstance(entry, dict):
                    info[task] = {**info.get(task, {}), **{k: entry[k] for k in ("family", "main_score") if entry.get(k)}}
    return info


def _curve_figure(title: str, traces: list[dict[str, Any]], y_title: str, x_title: str = "relative depth (layer / L)", legend_below: bool = False) -> dict[str, Any]:
    legend: dict[str, Any] = {"font": {"size": 10}}
    if legend_below:  # a wide plot with several models: the legend under the axis, the plot the full width
        legend |= {"orientation": "h", "y": -0.2}
    return {"data": traces, "layout": {
        "title": {"text": title, "font": {"size": 14}}, "margin": {"l": 55, "r": 10, "t": 40, "b": 45},
        "xaxis": {"title": {"text": x_title}, "range": [-0.02, 1.02]}, "yaxis": {"title": {"text": y_title}},
        "legend": legend, "hovermode": "closest"}}


def _trace(frame: pd.DataFrame, name: str, color: str | None = None, visible: bool = True) -> dict[str, Any]:
    frame = frame.sort_values("layer")
    trace: dict[str, Any] = {"type": "scatter", "mode": "lines+markers", "name": name, "x": [_number(v) for v in frame.depth.tolist()],
             "y": [_number(v) for v in frame.value.tolist()], "text": [f"layer {int(v)}" for v in frame.layer.tolist()],
             "hovertemplate": "%{text}: %{y:.4g}<extra>" + name + "</extra>", "visible": True if visible else "legendonly"}
    if color:
        trace["line"] = {"color": color}
    errors = [_number(v) for v in frame.stderr.tolist()]
    if any(e is not None for e in errors):
        trace["error_y"] = {"type": "data", "array": errors, "visible": True, "thickness": 1}
    return trace


def _baseline_lines(rows: pd.DataFrame, baselines: dict[str, str], name: str = "", color: str = "#5a6273") -> list[dict[str, Any]]:
    """Dashed horizontal lines across depth 0..1 at the summary rows of ``baselines`` (metric -> label) in ``rows``."""
    lines = []
    summaries = rows[rows.layer.isna()]
    for i, (metric, label) in enumerate(baselines.items()):
        found = summaries[summaries.metric == metric]
        if found.empty or pd.isna(found.value.iloc[0]):
            continue
        value = float(found.value.iloc[0])
        title = f"{label}: {name}" if name else label
        lines.append({"type": "scatter", "mode": "lines", "name": title, "x": [0, 1], "y": [value, value], "legendgroup": name or metric,
                      "line": {"color": color, "dash": "dash" if i == 0 else "dot", "width": 1.5}, "showlegend": not name or i == 0,
                      "hovertemplate": f"{title}: {value:.4g}<extra></extra>"})
    return lines


def _best_marker(best: pd.Series, name: str, color: str) -> dict[str, Any]:
    """A star on a curve at its best layer (a row of :func:`layerbench.analysis.best_layer`)."""
    return {"type": "scatter", "mode": "markers", "name": f"best: {name}", "showlegend": False, "legendgroup": name,
            "x": [_number(best.best_depth)], "y": [_number(best.best_value)],
            "marker": {"symbol": "star", "size": 15, "color": color, "line": {"color": "#1d2230", "width": 1}},
            "hovertemplate": f"best layer {int(best.best_layer)}: %{{y:.4g}}<extra>{name}</extra>"}


def _depth_heatmap(rows: pd.DataFrame, mains: dict[str, str | None], title: str) -> dict[str, Any] | None:
    """Tasks x depth for one model: each task's main score per layer, scaled to [0, 1] between its worst and best layer.

    The scaling makes tasks with different units comparable row by row (1 is
    the task's best layer, 0 its worst; flipped for lower-is-better scores);
    the hover shows the raw score. None when no task has a directed main score.
    """
    per_layer = layer_rows(rows)
    per_layer = per_layer[(per_layer.metric == per_layer.task.map(mains)) & per_layer.higher_is_better.notna()]
    per_layer = per_layer.sort_values(["task", "subset", "split"]).drop_duplicates(["task", "layer"])  # the first subset, as the summary ranks
    if per_layer.empty:
        return None
    tasks = sorted(per_layer.task.unique())
    depths = sorted(per_layer.depth.unique())
    z, raw = [], []
    for task in tasks:
        curve = per_layer[per_layer.task == task].set_index("depth")
        values = curve.value.astype(float)
        low, high = values.min(), values.max()
        scaled = (values - low) / (high - low) if high > low else values * 0 + 1.0
        if not bool(curve.higher_is_better.iloc[0]):
            scaled = 1.0 - scaled
        z.append([_number(scaled.get(d)) for d in depths])
        raw.append([_number(values.get(d)) for d in depths])
    return {"data": [{"type": "heatmap", "x": [_number(d) for d in depths], "y": tasks, "z": z, "customdata": raw, "zmin": 0, "zmax": 1,
                      "colorscale": "Viridis", "colorbar": {"title": {"text": "scaled score"}},
                      "hovertemplate": "%{y}<br>depth %{x:.2f}: %{customdata:.4g} (scaled %{z:.2f})<extra></extra>"}],
            "layout": {"title": {"text": title, "font": {"size": 14}}, "height": 120 + 18 * len(tasks),
                       "margin": {"l": 250, "r": 10, "t": 40, "b": 45}, "xaxis": {"title": {"text": "relative depth (layer / L)"}},
                       "yaxis": {"automargin": True, "tickfont": {"size": 10}, "autorange": "reversed"}}}


def _model_sections(rows: pd.DataFrame, families: dict[str, str], mains: dict[str, str | None], schema: dict[str, Any],
                    figures: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """The figures of one model's page, grouped in sections; fills ``figures`` (plot id -> Plotly figure)."""
    from layerbench.metrics import list_metrics

    label_free = {info.name for info in list_metrics()}
    not_scores = tuple(schema["not_scores"])
    sections = []
    heatmap = _depth_heatmap(rows, mains, "every task's main score by depth, scaled per task (1 = its best layer)")
    if heatmap is not None:
        figures[f"{prefix}-depth-heatmap"] = heatmap
        sections.append({"id": "tasks-by-depth", "title": "Tasks x depth", "plots": [f"{prefix}-depth-heatmap"], "wide": True,
                         "note": "One row per task (and paper protocol), one column per layer: where in the model each task is solved best. "
                                 "Each row is scaled between its own worst (0) and best (1) layer; hover for the raw score."})
    per_layer = layer_rows(rows)
    by_task = dict(iter(per_layer.groupby("task", sort=False)))
    present = sorted(set(families.get(t, "other") for t in by_task))
    order = [f for f in schema["families"] if f in present] + [f for f in present if f not in schema["families"]]
    for family in order:
        tasks = sorted(t for t in by_task if families.get(t, "other") == family)
        score_plots, metric_plots = [], []
        for task in tasks:
            task_rows = by_task[task]
            main = mains.get(task)
            curves = dict(iter(task_rows.groupby(["metric", "subset"], sort=False)))  # (metric, subset) -> its rows, in row order
            scores = [m for m in sorted(task_rows.metric.unique()) if m not in label_free and not m.startswith(not_scores)]
            if scores:
                traces = []
                for i, (metric, subset) in enumerate(key for key in curves if key[0] in scores):
                    traces.append(_trace(curves[(metric, subset)], f"{metric} ({subset})", _PALETTE[i % len(_PALETTE)], visible=metric == (main or scores[0])))
                traces += _baseline_lines(rows[rows.task == task], schema.get("baselines", {}))
                plot = f"{prefix}-{task}-scores"
                figures[plot] = _curve_figure(f"{task}: {main or 'scores'}", traces, main or "score")
                score_plots.append(plot)
            metrics = [m for m in sorted(task_rows.metric.unique()) if m in label_free]
            if metrics:
                by_metric = dict(iter(task_rows[task_rows.metric.isin(metrics)].groupby("metric", sort=False)))
                traces = [_trace(by_metric[m], m, _PALETTE[i % len(_PALETTE)], visible=i == 0) for i, m in enumerate(metrics)]
                plot = f"{prefix}-{task}-metrics"
                figures[plot] = _curve_figure(f"{task}: label-free metrics", traces, "value (click the legend)")
                metric_plots.append(plot)
        if score_plots:
            sections.append({"id": f"family-{family}", "title": f"{family}: task scores per layer", "plots": score_plots, "note": ""})
        if metric_plots:
            sections.append({"id": f"family-{family}-metrics", "title": f"{family}: label-free metrics per layer", "plots": metric_plots, "note": ""})
    for section in schema["sections"]:
        build = {"heatmap": _heatmap_sections, "subset_curves": _subset_curve_sections}[section["kind"]]
        sections += build(rows, section, figures, prefix)
    return sections


def _heatmap_sections(rows: pd.DataFrame, section: dict[str, Any], figures: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
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
            grid = cells.pivot_table(index="source_layer", columns="layer", values="value", aggfunc="first").sort_index().sort_index(axis=1)
            plot = f"{prefix}-{task}-heat-{subset}"
            figures[plot] = {"data": [{"type": "heatmap", "x": [int(c) for c in grid.columns], "y": [int(i) for i in grid.index],
                                       "z": [[_number(v) for v in row] for row in grid.to_numpy()], "zmin": 0, "zmax": 1, "colorscale": "Viridis",
                                       "colorbar": {"title": {"text": section["colorbar"]}},
                                       "hovertemplate": "source %{y} → target %{x}: %{z:.2f}<extra></extra>"}],
                             "layout": {"title": {"text": f"{task}: {subset} (n={int(cells.n.iloc[0])})", "font": {"size": 14}},
                                        "margin": {"l": 55, "r": 10, "t": 40, "b": 45},
                                        "xaxis": {"title": {"text": section["x_title"]}}, "yaxis": {"title": {"text": section["y_title"]}}}}
            plots.append(plot)
        sections.append({"id": f"{section['id']}-{task}", "title": section["title"].format(task=task), "plots": plots,
                         "note": section["note"] + (f" No query in: {', '.join(empty)}." if empty else "")})
    return sections


def _subset_curve_sections(rows: pd.DataFrame, section: dict[str, Any], figures: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Per task with any of ``section["metrics"]``: a plot per metric with one curve per subset, in the section's colours."""
    curves = layer_rows(rows[rows.metric.isin(section["metrics"])])
    sections = []
    for task in sorted(curves.task.unique()):
        plots = []
        for metric in section["metrics"]:
            part = curves[(curves.task == task) & (curves.metric == metric)]
            if part.empty:
                continue
            traces = [_trace(part[part.subset == s], s, color) for s, color in section["subsets"].items() if (part.subset == s).any()]
            plot = f"{prefix}-{task}-{metric}"
            figures[plot] = _curve_figure(f"{task}: {metric}", traces, section["y_title"])
            plots.append(plot)
        sections.append({"id": f"{section['id']}-{task}", "title": section["title"].format(task=task), "plots": plots, "note": section["note"]})
    return sections


def _aggregate(values: pd.Series, statistic: str) -> Any:
    """An index cell: the ``mean`` of the defined values, or ``count_positive`` as "k/n"; None when there are none."""
    values = values.dropna().astype(float)
    if values.empty:
        return None
    if statistic == "mean":
        return _number(values.mean())
    if statistic == "count_positive":
        return f"{int((values > 0).sum())}/{len(values)}"
    raise ValueError(f"schema.yaml: unknown statistic '{statistic}'; use mean or count_positive")


def _cell_n(part: pd.DataFrame, field: str) -> str | None:
    """What an index cell rests on: its tasks for a mean over tasks, its items for a headline summary (``<field>_n``)."""
    defined = part[part[field].notna()]
    if defined.empty:
        return None
    if f"{field}_n" in defined:
        return f"n={int(defined[f'{field}_n'].sum())}"
    return f"{len(defined)} task" + "s" * (len(defined) != 1)


def task_items(rows: pd.DataFrame, manifests: dict[str, list[dict[str, Any]]], mains: dict[str, str | None]) -> dict[tuple[str, str], int]:
    """(model, task as the site names it) -> the items the task was run on, for every task with rows of its main score.

    What "the same task set at full size" compares. The run manifests record
    each task's data size (after ``--limit``); a task without a manifest falls
    back on the largest ``n`` of its rows.
    """
    scored = rows[rows.metric == rows.task.map(mains)]
    sizes = {(m, t): int(n) for (m, t), n in scored.groupby(["model", "task"]).n.max().items()}
    for model, runs in manifests.items():
        for manifest in runs:  # oldest first: the latest record of a task wins
            for task, record in (manifest.get("tasks") or {}).items():
                for variant in (record.get("variants") or {"default": {}}):
                    key = (model, task + ("" if variant == "default" else variant))
                    if key in sizes and isinstance(record.get("n"), int):
                        sizes[key] = record["n"]
    return sizes


def task_signatures(table: pd.DataFrame, families: dict[str, str], sizes: dict[tuple[str, str], int]) -> dict[tuple[Any, Any], dict[str, frozenset]]:
    """Per (model, revision or None) and family: the set of (task, items) it has scores on, the thing two models must share to be ranked together.

    ``sizes`` maps (model, task) to the items the task was run on (:func:`task_items`).
    """
    out: dict[tuple[Any, Any], dict[str, frozenset]] = {}
    for (model, revision), group in table.groupby(["model", "revision"], dropna=False, sort=True):
        per_family: dict[str, set] = {}
        for task in group.task:
            if (model, task) not in sizes:  # no rows of its main score (an encoder's back-patching task has only label-free metric rows)
                continue
            per_family.setdefault(families.get(task, "other"), set()).add((task, sizes[(model, task)]))
        out[(model, None if pd.isna(revision) else revision)] = {family: frozenset(tasks) for family, tasks in per_family.items()}
    return out


def reference_signatures(signatures: dict[tuple[Any, Any], dict[str, frozenset]]) -> dict[str, frozenset]:
    """Per family, the task set most models were run on (ties: the one with more tasks, then more items): what the index ranks on."""
    counts: dict[str, Counter[frozenset]] = {}
    for per_family in signatures.values():
        for family, signature in per_family.items():
            counts.setdefault(family, Counter())[signature] += 1
    return {family: max(found, key=lambda sig: (found[sig], len(sig), sum(n for _, n in sig))) for family, found in counts.items()}


def _why_apart(mine: dict[str, frozenset], reference: dict[str, frozenset]) -> str | None:
    """Why a model's tasks differ from the reference task sets (None: they match, it is ranked)."""
    reasons = []
    for family, signature in sorted(mine.items()):
        wanted = reference[family]
        if signature == wanted:
            continue
        tasks, wanted_tasks = {t for t, _ in signature}, {t for t, _ in wanted}
        sizes, wanted_sizes = dict(signature), dict(wanted)
        smaller = [f"{t} {sizes[t]} of {wanted_sizes[t]}" for t in sorted(tasks & wanted_tasks) if sizes[t] != wanted_sizes[t]]
        parts = [f"{len(tasks & wanted_tasks)} of {len(wanted_tasks)} tasks"] if tasks != wanted_tasks else []
        parts += [f"{len(tasks - wanted_tasks)} other task(s)"] if tasks - wanted_tasks else []
        parts += [f"items {', '.join(smaller[:3])}" + (" ..." if len(smaller) > 3 else "")] if smaller else []
        reasons.append(f"{family}: {'; '.join(parts)}")
    return "; ".join(reasons) or None


def _index_rows(table: pd.DataFrame, families: dict[str, str], manifests: dict[str, list[dict[str, Any]]], rows: pd.DataFrame,
                schema: dict[str, Any], sizes: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    """One index row per (model, revision): the schema's columns, each cell's n (``_n_<column>``), and ``apart``: why it is not ranked, else None."""
    signatures = task_signatures(table, families, sizes)
    reference = reference_signatures(signatures)
    out = []
    for (model, revision), group in table.groupby(["model", "revision"], dropna=False, sort=True):
        revision = None if pd.isna(revision) else revision
        why = _why_apart(signatures[(model, revision)], reference)
        latest = (manifests.get(model) or [{}])[-1].get("model", {})
        n_layers = int(rows.loc[rows.model == model, "n_layers"].max())
        row: dict[str, Any] = {"model": model, "_href_model": f"models/{model_slug(model, revision)}.html", "revision": revision or "—",
                               "parameters": latest.get("parameters"), "layers": n_layers, "tasks": int(group.task.nunique()), "apart": why}
        group = group.assign(family=group.task.map(lambda t: families.get(t, "other")))
        for column in schema["index_columns"]:
            if "field" not in column:
                continue
            part = group
            if "family" in column:
                part = part[part.family == column["family"]]
            if "protocol" in column:
                part = part[part.protocol == column["protocol"]]
            row[column["id"]] = _aggregate(part[column["field"]], column["statistic"])
            row[f"_n_{column['id']}"] = _cell_n(part, column["field"])
        out.append(row)
    return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with plain Python values (numbers or None), for the templates; a row with a ``note`` is shown muted."""
    out = []
    for record in frame.to_dict("records"):
        row = {k: (None if (not isinstance(v, str) and pd.isna(v)) else (v.item() if hasattr(v, "item") else v)) for k, v in record.items()}
        if row.get("note"):
            row["_class"] = "muted"
        out.append(row)
    return out


def build_site(results: list[str | Path], output: str | Path) -> Path:
    """Write the leaderboard site for the result folders ``results`` into ``output``; returns the index page.

    Raises:
        UserError: a folder is missing or holds no results, or a file in it is corrupt.
    """
    import jinja2

    paths = [Path(p) for p in results]
    rows = pd.concat([load_results(p) for p in paths], ignore_index=True)
    rows = rows.drop_duplicates(subset=[c for c in rows.columns if c != "run_id"], keep="last")
    # Each (task, protocol, site) is its own entry on the site, named as its result file is.
    rows = rows.assign(task=[t + variant_suffix(p, s) for t, p, s in zip(rows.task, rows.protocol, rows.site)])
    manifests = read_manifests(paths)
    schema = presentation()
    tasks = sorted(rows.task.unique())
    # Family and main score as the runs recorded them (never the task specs installed here).
    info = task_info(manifests)
    families = {t: info.get(base_task(t), {}).get("family", "other") for t in tasks}
    mains = main_metrics(rows, {t: info.get(base_task(t), {}).get("main_score") for t in tasks})
    table = summary(rows, mains)
    summary_columns = _columns(schema["summary_columns"])
    out = Path(output)
    for sub in ("assets", "models", "tasks", "data"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _copy_assets(out / "assets")
    rows.to_csv(out / "data" / "results.csv", index=False)
    rows.to_parquet(out / "data" / "results.parquet", index=False)

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PARTS / "templates"), autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = _fmt

    def render(name: str, target: Path, **context: Any) -> None:
        target.write_text(env.get_template(name).render(figures=context.pop("figures", {}), **context), encoding="utf-8")

    sizes = task_items(rows, manifests, mains)
    models = _index_rows(table, families, manifests, rows, schema, sizes)
    ranked, apart = [m for m in models if m["apart"] is None], [m for m in models if m["apart"] is not None]
    index_columns = _columns(schema["index_columns"])
    render("index.html", out / "index.html", root="", title="Layer-wise leaderboard", sources=[str(p) for p in paths], n_rows=len(rows),
           models=models, n_tasks=len(tasks), model_table={"id": "models", "columns": index_columns, "rows": ranked},
           apart_table={"id": "apart", "columns": [*index_columns[:1], ("tasks", "tasks", False), ("apart", "not ranked because", True), *index_columns[1:]],
                        "rows": apart})

    for model_row in models:
        model = model_row["model"]
        revision = None if model_row["revision"] == "—" else model_row["revision"]
        slug = model_slug(model, revision)
        mine = rows[(rows.model == model) & (rows.revision.isna() if revision is None else rows.revision == revision)]
        figures: dict[str, Any] = {}
        sections = _model_sections(mine, families, mains, schema, figures, "m")
        task_rows = _records(table[table.model == model].assign(family=lambda t: t.task.map(lambda x: families.get(x, "other"))))
        for r in task_rows:
            r["_href_task"] = f"../tasks/{r['task']}.html"
        latest = (manifests.get(model) or [{}])[-1]
        render("model.html", out / "models" / f"{slug}.html", root="../", title=model, figures=figures, sections=sections,
               model={"parameters": latest.get("model", {}).get("parameters"), "n_layers": model_row["layers"], "revision": revision},
               task_table={"id": "tasks", "columns": [("task", "task", True), ("family", "family", True), *summary_columns], "rows": task_rows},
               manifests=[{"run_id": m.get("run_id", "?"), "status": m.get("status", "?"), "text": json.dumps(m, indent=2, default=str)} for m in manifests.get(model, [])])

    task_index = []
    per_layer_by_task = dict(iter(layer_rows(rows).groupby("task", sort=False)))
    for task in tasks:
        figures = {}
        mine = per_layer_by_task.get(task, rows.iloc[:0])
        main = mains.get(task)
        plots = []
        metric_list = [main] if main else []
        metric_list += [m for m in ("accuracy", "main_score") if m != main and m in set(mine.metric)]
        for metric in metric_list:
            part = mine[mine.metric == metric]
            traces = []
            bests = best_layer(part, metric=metric).set_index(["model", "subset", "split"])
            for i, ((model, subset, split), curve) in enumerate(part.groupby(["model", "subset", "split"], sort=True)):
                color = _PALETTE[i % len(_PALETTE)]
                traces.append(_trace(curve, f"{model} ({subset})", color))
                if (model, subset, split) in bests.index:
                    traces.append(_best_marker(bests.loc[(model, subset, split)], f"{model} ({subset})", color))
                if metric == main:
                    traces += _baseline_lines(rows[(rows.task == task) & (rows.model == model)], schema.get("baselines", {}), model, color)
            if traces:
                plot = f"t-{metric}"
                figures[plot] = _curve_figure(f"{task}: {metric} of every model by relative depth (stars: best layers)", traces, metric, legend_below=True)
                plots.append(plot)
        best = _records(table[table.task == task])
        for r in best:
            r["_href_model"] = f"../models/{model_slug(r['model'], r['revision'])}.html"
        render("task.html", out / "tasks" / f"{task}.html", root="../", title=task, figures=figures, plots=plots,
               description=f"Family {families.get(task, 'other')}; main metric {main or '—'}. Every model's curve against relative depth "
                           "(layer / its number of layers, so models of different depth line up); a star marks each model's best layer, dashed and "
                           "dotted lines its baselines where the task has them (bag of words, chance). A greyed-out row has no concept depth: "
                           "its best layer does not beat the baselines (see its note).",
               best_table={"id": "best", "columns": [("model", "model", True), *summary_columns], "rows": best})
        mine_summary = table[table.task == task]
        noted = int(mine_summary.note.notna().sum())  # models for which the task's headline is withheld (no concept beyond the baselines)
        entry = {"task": task, "_href_task": f"tasks/{task}.html", "family": families.get(task, "other"), "metric": main,
                 "models": int(mine_summary.model.nunique()), "best": _number(mine_summary.best_value.max()),
                 "headline": f"{len(mine_summary) - noted}/{len(mine_summary)}" if noted else None}
        if noted and noted == len(mine_summary):
            entry["_class"] = "muted"
        task_index.append(entry)
    render("tasks.html", out / "tasks.html", root="", title="Tasks",
           task_table={"id": "tasks", "columns": [("task", "task", True), ("family", "family", True), ("metric", "main metric", True),
                                                   ("models", "models", False), ("best", "best score", False),
                                                   ("headline", "models with a headline", True)], "rows": task_index})

    judged = _metric_tables(rows, mains)
    render("metrics.html", out / "metrics.html", root="", title="Label-free metrics as layer pickers", figures=judged["figures"],
           verdict=judged["verdict"], models=sorted(rows.model.unique()), plots=list(judged["figures"]),
           metric_table={"id": "metrics", "columns": [("metric", "metric", True), ("direction", "direction", True), ("models", "models", False),
                                                      ("pairs", "model x task", False), ("spearman", "mean Spearman", False),
                                                      ("beats_last", "beats last", True), ("picked_gain", "mean (picked - last)", False),
                                                      ("ceiling", "mean (best - last)", False), ("regret", "mean (best - picked)", False)],
                         "rows": judged["summary"]},
           detail_table={"id": "details", "columns": [("metric", "metric", True), ("model", "model", True), ("task", "task", True),
                                                      ("spearman", "Spearman", False), ("picked_layer", "picked layer", False),
                                                      ("picked_score", "score at pick", False), ("last_score", "score at last", False),
                                                      ("best_score", "best score", False)], "rows": judged["details"]})
    return out / "index.html"


def _metric_tables(rows: pd.DataFrame, mains: dict[str, str | None]) -> dict[str, Any]:
    """The metrics page: per label-free metric, how well it picks each (model, task)'s best layer, with figures and a verdict.

    For every (model, task) where both exist (:func:`layerbench.analysis.metric_predicts_best_layer`):
    Spearman's rank correlation across layers between the metric and the
    task's main score, and the main score at the layer the metric picks
    against the last layer's and the best layer's. Gains are signed so that
    positive is better whatever the task's direction. Returns the summary and
    detail rows, the figures and the verdict sentence.
    """
    from layerbench.metrics import list_metrics

    direction = {True: "higher is better", False: "lower is better", None: "descriptive"}
    present = set(rows.metric)
    summary_rows, details, picks_of = [], [], {}
    for info in list_metrics():
        if info.name not in present:
            continue
        picks = metric_predicts_best_layer(rows, info.name, mains)
        if picks.empty:
            continue
        sign = np.where(picks.higher_is_better.astype(bool), 1.0, -1.0)  # the main score's own direction
        picks = picks.assign(gain=sign * (picks.picked_score - picks.last_score), ceiling=sign * (picks.best_score - picks.last_score))
        picks_of[info.name] = picks
        picks_layers = info.higher_is_better is not None  # a descriptive metric has no best layer: it "picks" the last
        summary_rows.append({"metric": info.name, "direction": direction[info.higher_is_better], "pairs": len(picks), "models": picks.model.nunique(),
                             "spearman": _number(picks.spearman.mean()),
                             "beats_last": f"{int((picks.gain > 1e-12).sum())}/{len(picks)}" if picks_layers else None,
                             "picked_gain": _number(picks.gain.mean()) if picks_layers else None, "ceiling": _number(picks.ceiling.mean()),
                             "regret": _number((picks.ceiling - picks.gain).mean()) if picks_layers else None,
                             "per_model": {m: float(g.gain.mean()) for m, g in picks.groupby("model")} if picks_layers else {}})
        details += [{"metric": info.name, **r} for r in _records(picks.drop(columns=["gain", "ceiling", "higher_is_better"]))]
    figures: dict[str, Any] = {}
    if picks_of:
        models = sorted({m for p in picks_of.values() for m in p.model})
        names = list(picks_of)

        def bars(value: Any, title: str, y_title: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
            traces = []
            for i, model in enumerate(models):
                ys = [_number(value(picks_of[n][picks_of[n].model == model])) for n in names]
                traces.append({"type": "bar", "name": model, "x": names, "y": ys, "marker": {"color": _PALETTE[i % len(_PALETTE)]},
                               "hovertemplate": "%{x}: %{y:.3f}<extra>" + model + "</extra>"})
            if extra:
                traces += extra["traces"](models)
            return {"data": traces, "layout": {"title": {"text": title, "font": {"size": 14}}, "barmode": "group", "height": 460,
                                               "margin": {"l": 60, "r": 10, "t": 40, "b": 120}, "yaxis": {"title": {"text": y_title}, "zeroline": True},
                                               "xaxis": {"tickangle": -30}, "legend": {"font": {"size": 10}}}}

        figures["spearman"] = bars(lambda p: p.spearman.mean() if len(p) else None,
                                   "Rank correlation with the task's score across layers (mean over each model's tasks)", "mean Spearman")
        ceiling = {m: float(pd.concat([p[p.model == m] for p in picks_of.values()]).drop_duplicates("task").ceiling.mean()) for m in models}
        names = [r["metric"] for r in summary_rows if r["picked_gain"] is not None]  # descriptive metrics pick no layer
        figures["gain"] = bars(lambda p: p.gain.mean() if len(p) else None,
                               "Score at the picked layer minus the last layer's (diamonds: the best layer's)", "picked - last (mean over tasks)",
                               {"traces": lambda ms: [{"type": "scatter", "mode": "markers", "name": f"best layer: {m}", "x": names, "y": [ceiling[m]] * len(names),
                                                       "marker": {"symbol": "diamond-open", "size": 9, "color": _PALETTE[i % len(_PALETTE)]},
                                                       "hovertemplate": "best - last: %{y:.3f}<extra>" + m + "</extra>"} for i, m in enumerate(ms)]})
    return {"summary": summary_rows, "details": details, "figures": figures, "verdict": _verdict(summary_rows)}


def _verdict(summary_rows: list[dict[str, Any]]) -> str:
    """One honest paragraph on whether any label-free metric picks better layers than simply taking the last one."""
    if not summary_rows:
        return "No result folder has both label-free metrics and task scores per layer, so no metric can be judged here."
    directed = [r for r in summary_rows if r["picked_gain"] is not None]
    winners = sorted((r for r in directed if r["picked_gain"] > 0), key=lambda r: -r["picked_gain"])
    pairs = max(r["pairs"] for r in summary_rows)
    ceiling = max((r["ceiling"] for r in summary_rows if r["ceiling"] is not None), default=0.0)
    local = [f"{r['metric']} on {m} ({g:+.3f})" for r in directed for m, g in sorted(r["per_model"].items()) if g > 0]
    on_some = f" Averaged over one model's tasks only, some do: {', '.join(local)}." if local else ""
    if not winners:
        best = max(directed, key=lambda r: r["picked_gain"]) if directed else None
        closest = f" The closest is {best['metric']} ({best['picked_gain']:+.3f})." if best else ""
        return (f"No label-free metric beats the last layer: over these {pairs} (model, task) pairs, the layer any metric picks "
                f"scores lower on average than simply the last layer.{closest}{on_some} The best layer would gain {ceiling:+.3f} on average: "
                "the room is there, and these metrics do not find it.")
    listed = ", ".join(f"{r['metric']} ({r['picked_gain']:+.3f}, better than the last layer on {r['beats_last']})" for r in winners)
    return (f"Over these {pairs} (model, task) pairs, {len(winners)} of {len(directed)} metrics that pick a layer beat the last layer on "
            f"average: {listed}. The best layer would gain {ceiling:+.3f}; the rest of that gap no metric recovers.")


def _copy_assets(target: Path) -> None:
    import plotly

    bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not bundle.is_file():
        raise UserError(f"the plotly package has no JavaScript bundle at {bundle}; reinstall plotly")
    shutil.copyfile(bundle, target / "plotly.min.js")
    for name in ("site.js", "site.css"):
        shutil.copyfile(PARTS / "static" / name, target / name)
