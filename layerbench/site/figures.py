"""The site's figures: Plotly figure dicts (JSON) from result rows, every title and sentence from the presentation schema."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from layerbench.analysis import layer_rows

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def number(value: Any) -> float | None:
    """A JSON-safe number: NaN, infinities and <NA> become null (JSON has no NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def curve_figure(title: str, traces: list[dict[str, Any]], y_title: str, x_title: str, legend_below: bool = False) -> dict[str, Any]:
    """A figure of curves against relative depth."""
    legend: dict[str, Any] = {"font": {"size": 10}}
    if legend_below:  # a wide plot with several models: the legend under the axis, the plot the full width
        legend |= {"orientation": "h", "y": -0.2}
    return {"data": traces, "layout": {
        "title": {"text": title, "font": {"size": 14}}, "margin": {"l": 55, "r": 10, "t": 40, "b": 45},
        "xaxis": {"title": {"text": x_title}, "range": [-0.02, 1.02]}, "yaxis": {"title": {"text": y_title}},
        "legend": legend, "hovermode": "closest"}}


def with_selector(figure: dict[str, Any], options: list[tuple[str, list[int], str]], name_axis: bool = True) -> dict[str, Any]:
    """``figure`` showing one option's traces at a time, the option named in the title (and on the y axis, unless not
    ``name_axis``); with more than one option, ``figure["selector"]`` lists them for the page's drop-down (``site.js``
    puts a ``<select>`` above the plot).

    Args:
        options: (label, indices of the traces it shows, figure title), the first shown when the page opens.
    """
    label, shown, title = options[0]
    n = len(figure["data"])
    for i, one in enumerate(figure["data"]):
        one["visible"] = i in shown
    figure["layout"]["title"]["text"] = title
    if name_axis:
        figure["layout"]["yaxis"]["title"]["text"] = label
    if len(options) > 1:
        figure["selector"] = [{"label": name, "visible": [i in indices for i in range(n)], "title": heading} for name, indices, heading in options]
    return figure


def trace(frame: pd.DataFrame, name: str, color: str | None = None, visible: bool = True) -> dict[str, Any]:
    """One curve: a row's value against its depth, the layer in the hover, its standard error as error bars."""
    frame = frame.sort_values("layer")
    out: dict[str, Any] = {"type": "scatter", "mode": "lines+markers", "name": name, "x": [number(v) for v in frame.depth.tolist()],
                           "y": [number(v) for v in frame.value.tolist()], "text": [f"layer {int(v)}" for v in frame.layer.tolist()],
                           "hovertemplate": "%{text}: %{y:.4g}<extra>" + name + "</extra>", "visible": True if visible else "legendonly"}
    if color:
        out["line"] = {"color": color}
    errors = [number(v) for v in frame.stderr.tolist()]
    if any(e is not None for e in errors):
        out["error_y"] = {"type": "data", "array": errors, "visible": True, "thickness": 1}
    return out


def baseline_lines(rows: pd.DataFrame, baselines: dict[str, str], name: str = "", color: str = "#5a6273") -> list[dict[str, Any]]:
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


def best_marker(best: pd.Series, name: str, color: str) -> dict[str, Any]:
    """A star on a curve at its best layer (a row of :func:`layerbench.analysis.best_layer`)."""
    return {"type": "scatter", "mode": "markers", "name": f"best: {name}", "showlegend": False, "legendgroup": name,
            "x": [number(best.best_depth)], "y": [number(best.best_value)],
            "marker": {"symbol": "star", "size": 15, "color": color, "line": {"color": "#1d2230", "width": 1}},
            "hovertemplate": f"best layer {int(best.best_layer)}: %{{y:.4g}}<extra>{name}</extra>"}


def depth_heatmap(rows: pd.DataFrame, mains: dict[str, str | None], title: str, x_title: str) -> dict[str, Any] | None:
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
        z.append([number(scaled.get(d)) for d in depths])
        raw.append([number(values.get(d)) for d in depths])
    return {"data": [{"type": "heatmap", "x": [number(d) for d in depths], "y": tasks, "z": z, "customdata": raw, "zmin": 0, "zmax": 1,
                      "colorscale": "Viridis", "colorbar": {"title": {"text": "scaled score"}},
                      "hovertemplate": "%{y}<br>depth %{x:.2f}: %{customdata:.4g} (scaled %{z:.2f})<extra></extra>"}],
            "layout": {"title": {"text": title, "font": {"size": 14}}, "height": 120 + 18 * len(tasks),
                       "margin": {"l": 250, "r": 10, "t": 40, "b": 45}, "xaxis": {"title": {"text": x_title}},
                       "yaxis": {"automargin": True, "tickfont": {"size": 10}, "autorange": "reversed"}}}


def source_target_heatmap(cells: pd.DataFrame, title: str, section: dict[str, Any]) -> dict[str, Any]:
    """One heat map of ``cells`` (rows with a ``source_layer``): source layer x target layer, the section's colour bar and axis titles."""
    grid = cells.pivot_table(index="source_layer", columns="layer", values="value", aggfunc="first").sort_index().sort_index(axis=1)
    return {"data": [{"type": "heatmap", "x": [int(c) for c in grid.columns], "y": [int(i) for i in grid.index],
                      "z": [[number(v) for v in row] for row in grid.to_numpy()], "zmin": 0, "zmax": 1, "colorscale": "Viridis",
                      "colorbar": {"title": {"text": section["colorbar"]}},
                      "hovertemplate": "source %{y} → target %{x}: %{z:.2f}<extra></extra>"}],
            "layout": {"title": {"text": title, "font": {"size": 14}}, "margin": {"l": 55, "r": 10, "t": 40, "b": 45},
                       "xaxis": {"title": {"text": section["x_title"]}}, "yaxis": {"title": {"text": section["y_title"]}}}}


def grouped_bars(values: dict[str, dict[str, float | None]], title: str, y_title: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Bars grouped by category: ``values`` maps a series (a model) to category (a metric) -> value; ``extra`` traces go on top."""
    traces = []
    for i, (series, by_category) in enumerate(values.items()):
        traces.append({"type": "bar", "name": series, "x": list(by_category), "y": [number(v) for v in by_category.values()],
                       "marker": {"color": PALETTE[i % len(PALETTE)]}, "hovertemplate": "%{x}: %{y:.3f}<extra>" + series + "</extra>"})
    return {"data": traces + (extra or []), "layout": {"title": {"text": title, "font": {"size": 14}}, "barmode": "group", "height": 460,
                                                      "margin": {"l": 60, "r": 10, "t": 40, "b": 120}, "yaxis": {"title": {"text": y_title}, "zeroline": True},
                                                      "xaxis": {"tickangle": -30}, "legend": {"font": {"size": 10}}}}


def markers(xs: list[str], ys: list[float], name: str, color: str, hover: str, series: str) -> dict[str, Any]:
    """Open diamonds at ``(xs, ys)``: a reference value of ``series`` (a model) drawn over grouped bars."""
    return {"type": "scatter", "mode": "markers", "name": name, "x": xs, "y": [number(y) for y in ys],
            "marker": {"symbol": "diamond-open", "size": 9, "color": color}, "hovertemplate": hover + ": %{y:.3f}<extra>" + series + "</extra>"}


def interval_bars(values: dict[str, dict[str, tuple[float, float, float]]], title: str, y_title: str) -> dict[str, Any]:
    """Bars grouped by category with 95% intervals as error bars: ``values`` maps a series (a task family) to category
    (a method) -> (value, low, high)."""
    figure = grouped_bars({series: {c: v[0] for c, v in by.items()} for series, by in values.items()}, title, y_title)
    for one, by in zip(figure["data"], values.values()):
        one["error_y"] = {"type": "data", "symmetric": False, "array": [number(v[2] - v[0]) for v in by.values()],
                          "arrayminus": [number(v[0] - v[1]) for v in by.values()], "thickness": 1, "width": 2}
    return figure


def picked_against_best(points: dict[str, pd.DataFrame], title: str, x_title: str, y_title: str) -> dict[str, Any]:
    """One model's picked layers against its best ones on the depth axis, a trace per (option, model), with a drop-down of
    the options (the methods): ``points`` maps an option to rows ``model, task, best_depth, picked_depth``."""
    traces: list[dict[str, Any]] = []
    options: list[tuple[str, list[int], str]] = []
    for option, frame in points.items():
        shown = []
        for i, (model, rows) in enumerate(frame.groupby("model", sort=True)):
            shown.append(len(traces))
            traces.append({"type": "scatter", "mode": "markers", "name": model, "x": [number(v) for v in rows.best_depth],
                           "y": [number(v) for v in rows.picked_depth], "text": rows.task.tolist(), "marker": {"color": PALETTE[i % len(PALETTE)], "size": 8},
                           "hovertemplate": "%{text}: best %{x:.2f}, picked %{y:.2f}<extra>" + model + "</extra>"})
        options.append((option, shown, f"{title}: {option}"))
    diagonal = {"type": "scatter", "mode": "lines", "name": "picked = best", "x": [0, 1], "y": [0, 1], "line": {"dash": "dot", "color": "#999"},
                "hoverinfo": "skip"}
    figure = curve_figure(title, [*traces, diagonal], y_title, x_title)
    figure["layout"]["yaxis"]["range"] = [-0.02, 1.02]
    figure = with_selector(figure, [(label, [*shown, len(traces)], heading) for label, shown, heading in options], name_axis=False)
    return figure
