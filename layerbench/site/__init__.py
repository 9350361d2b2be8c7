"""The static leaderboard site: a pure function of result folders (rows and run manifests), like HELM's of its JSON.

``build_site(["results"], "site")`` writes::

    site/index.html            one row per model, headline numbers per family
    site/models/<slug>.html    every task's layer curves, back-patching heat maps, IC curves, provenance
    site/models/<slug>/runs/   the manifest (JSON) of each run that wrote the model's results
    site/tasks.html            one row per task; site/tasks/<task>.html overlays every model's curve
    site/metrics.html          how well each label-free metric predicts the best layer
    site/across.html           layer similarity across models: each model's best match in another, every pair's map
    site/layer-selection.html  which layer with no labels: every label-free method's regret against the best layer
    site/data/results.{csv,parquet}, layer-selection.csv (every method's pick on every curve)
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
order, special sections, every table's columns, every title and sentence);
what is known about a task (its family and main score) comes from the run
manifests in the result folders, never from the task specs installed where
the site is built, so a results folder copied to another machine renders the
same there. Three modules do the work: :mod:`~layerbench.site.view` (what
each page shows, with :mod:`~layerbench.site.sections` for a model page's
figures), :mod:`~layerbench.site.figures` (Plotly figures) and
:mod:`~layerbench.site.render` (templates, assets, files).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from layerbench.site import index as index_page
from layerbench.site import render, view
from layerbench.site.across_page import across_page
from layerbench.site.metrics_page import metrics_page
from layerbench.site.selection_page import selection_page

__all__ = ["build_site"]


def build_site(results: list[str | Path], output: str | Path) -> Path:
    """Write the leaderboard site for the result folders ``results`` into ``output``; returns the index page.

    Raises:
        UserError: a folder is missing or holds no results, or a file in it is corrupt.
    """
    paths = [Path(p) for p in results]
    data = view.read_site(paths)
    out = Path(output)
    render.copy_assets(out / "assets")
    render.write_data(pd.concat([data.rows, data.across], ignore_index=True), out)
    pages = render.Renderer(out)
    index = data.schema["pages"]["index"]
    models = index_page.index_rows(data)
    ranked, apart = [m for m in models if m["apart"] is None], [m for m in models if m["apart"] is not None]
    index_columns, groups = index_page.index_columns(data.schema), index_page.index_groups(data.schema)
    pages.render("index.html", "index.html", title=index["title"], sources=[str(p) for p in paths], n_rows=len(data.rows), models=models,
                 n_tasks=data.rows.task.nunique(), model_table=view.table("models", index_columns, ranked, groups, decimals=3),
                 apart_table=view.table("apart", [*index_columns[:1], *index["apart_columns"], *index_columns[1:]], apart, groups, decimals=3),
                 groups=groups,
                 in_progress=view.runs_in_progress(data))
    for row in models:
        page = view.model_page(data, row)
        render.write_files(out, page.pop("manifest_files"))
        pages.render("model.html", f"models/{page.pop('slug')}.html", **page)
    task_pages, task_index = view.task_pages(data)
    for task, page in task_pages.items():
        pages.render("task.html", f"tasks/{task}.html", **page)
    pages.render("tasks.html", "tasks.html", **task_index)
    pages.render("metrics.html", "metrics.html", **metrics_page(data))
    pages.render("across.html", "across.html", **across_page(data))
    pages.render("selection.html", "layer-selection.html", **selection_page(data))
    if not data.selection.picks.empty:  # every method's pick on every curve, for pandas
        data.selection.picks.to_csv(out / "data" / "layer-selection.csv", index=False)
    return out / "index.html"
