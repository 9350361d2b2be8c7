"""What each page of the site shows, as plain data: a pure function of result rows, run manifests and the presentation schema.

Everything is keyed by (model, revision): two revisions of one model are two
rows of the index, two model pages, and two sets of curves. What a task is
(its family and main score) comes from the manifests, never from specs
installed where the site is built. Titles, sentences and column lists come
from ``leaderboard/schema.yaml``; the figures from :mod:`layerbench.site.figures`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from layerbench.analysis import (
    best_layer,
    layer_rows,
    main_metrics,
    summary,
)
from layerbench.config import shipped_folder
from layerbench.families import all_families, all_headlines
from layerbench.results import Manifest, load_results, model_slug, read_manifests
from layerbench.site import figures as fig
from layerbench.specs.protocols import base_task, variant_suffix

PARTS = shipped_folder("leaderboard")  # what the published site is made of: schema.yaml, templates/, static/
Key = tuple[str, "str | None"]  # (model, revision or None)
# A gain over the last layer counts as beating it only when it shows at the three decimals the pages print (+0.001 and up):
# "beats the last layer by +0.000" is never said.
BEATS_MARGIN = 0.0005


def presentation() -> dict[str, Any]:
    """The presentation schema (``schema.yaml``): section order, special sections, columns, titles and sentences."""
    return yaml.safe_load((PARTS / "schema.yaml").read_text())


def table(table_id: str, declared: list[dict[str, Any]], rows: list[dict[str, Any]], groups: list[dict[str, Any]] | None = None,
          decimals: int | None = None) -> dict[str, Any]:
    """A table as ``_table.html`` takes it.

    Returns:
        ``id``; ``columns``: the declared column dicts (``id``, ``title``, optional ``text``, ``group``, ``format``) that
        have a value in some row (the first always); ``groups``: the header row over them, one entry per run of
        consecutive columns of one group (``id``, ``title``, ``about``, ``toggle``: a check box shows or hides it, ``shown``: at
        first, ``span``), empty without ``groups``; ``hidden``: the groups not shown at first;
        ``rows``; ``notes``; ``decimals``: the digits after the point of every number (None: 4 significant digits).

    A column declared ``footnote: true`` (a row's note: why a value is missing) is too long for a cell: it is no column;
    the row's first cell links to the k-th of the ``notes`` under the table (``row["_note"] = k``), each (k, text, [first
    cells of the rows it is on]), one per distinct text, wrapped at the page's width.
    """
    shown = [c for i, c in enumerate(declared) if i == 0 or any(_filled(r.get(c["id"])) for r in rows)]
    notes: dict[str, list[str]] = {}
    first = shown[0]["id"] if shown else ""
    for column in (c for c in shown if c.get("footnote")):
        for row in rows:
            text = row.get(column["id"])
            if text:
                notes.setdefault(text, []).append(str(row.get(first, "")))
                row["_note"] = list(notes).index(text) + 1
    kept = [{"text": False, "group": None, "format": None, **c} for c in shown if not c.get("footnote")]
    header: list[dict[str, Any]] = []
    if groups:
        known = {g["id"]: g for g in groups}
        for column in kept:
            group = known[column["group"]]
            if header and header[-1]["id"] == group["id"]:
                header[-1]["span"] += 1
            else:
                header.append({"about": "", "toggle": False, "shown": True, **group, "span": 1})
    return {"id": table_id, "columns": kept, "groups": header, "rows": rows, "decimals": decimals, "hidden": [g["id"] for g in header if not g["shown"]],
            "notes": [(k, text, on) for k, (text, on) in enumerate(notes.items(), 1)]}


def _filled(value: Any) -> bool:
    """Whether a cell has something to print: a value, or a typed cell (:class:`~layerbench.site.index.IndexCell`) whose tasks ran."""
    return getattr(value, "shown", value) not in (None, "") or getattr(value, "n", None) is not None


def summary_columns(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The columns of a task's summary table: the schema's, with ``{headlines: true}`` replaced by every headline's column that a
    summary row gives (:func:`~layerbench.families.all_headlines`: its column and title, declared by its family)."""
    order = {name: i for i, name in enumerate(schema.get("families", []))}
    families = sorted(all_families().values(), key=lambda f: (order.get(f.name, len(order)), f.name))
    seen = {h.metric for h in all_headlines()}
    headlines = [{"id": h.column, "title": h.title} for f in families for h in f.headlines if h.metric in seen]
    return [c for column in schema["summary_columns"] for c in (headlines if column.get("headlines") else [column])]


@dataclass
class SiteData:
    """The rows and what the site knows about them: each task's family and main score, the summary table, each task's size."""

    paths: list[Path]
    rows: pd.DataFrame  # every row of one model, a task named with its variant suffix (``<task>@<protocol>``)
    manifests: dict[str, list[Manifest]]
    schema: dict[str, Any]
    families: dict[str, str]
    mains: dict[str, str | None]
    table: pd.DataFrame  # layerbench.summary of the rows
    sizes: dict[tuple[str, str | None, str], int]  # (model, revision, task) -> its items
    across: pd.DataFrame  # the rows of one model against another (``other_model`` set): the page across models

    @cached_property
    def selection(self) -> Any:
        """Every label-free layer-selection method on every scored (model, task) curve of our protocol, scored
        (:func:`layerbench.selection.evaluate`), computed once for the pages that show it."""
        from layerbench.selection import evaluate

        return evaluate(self.rows, mains=self.mains, families=self.families, summary=self.table)


def read_site(paths: list[Path]) -> SiteData:
    """The rows and manifests of the result folders, with what the runs recorded about their tasks."""
    rows = pd.concat([load_results(p) for p in paths], ignore_index=True)
    rows = rows.drop_duplicates(subset=[c for c in rows.columns if c != "run_id"], keep="last")
    # Each (task, protocol, site) is its own entry on the site, named as its result file is.
    rows = rows.assign(task=[t + variant_suffix(p, s) for t, p, s in zip(rows.task, rows.protocol, rows.site)])
    across, rows = rows[rows.other_model.notna()].reset_index(drop=True), rows[rows.other_model.isna()].reset_index(drop=True)
    manifests = read_manifests(paths)
    info: dict[str, dict[str, str]] = {}
    for runs in manifests.values():
        for run in runs:  # oldest first: the latest run's record wins
            for task, record in run.tasks.items():
                info[task] = {**info.get(task, {}), **{k: v for k, v in (("family", record.family), ("main_score", record.main_score)) if v}}
    tasks = sorted(rows.task.unique())
    families = {t: info.get(base_task(t), {}).get("family", "other") for t in tasks}
    mains = main_metrics(rows, {t: info.get(base_task(t), {}).get("main_score") for t in tasks})
    return SiteData(paths, rows, manifests, presentation(), families, mains, summary(rows, mains), task_items(rows, manifests, mains), across)


def revision_of(value: Any) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def task_items(rows: pd.DataFrame, manifests: dict[str, list[Manifest]], mains: dict[str, str | None]) -> dict[tuple[str, str | None, str], int]:
    """(model, revision, task as the site names it) -> the items the task was run on, for every task with rows of its main score.

    What "the same task set at full size" compares. The run manifests record
    each task's data size (after ``--limit``); a task without a manifest falls
    back on the largest ``n`` of its rows.
    """
    scored = rows[rows.metric == rows.task.map(mains)]
    sizes = {(m, revision_of(r), t): int(n) for (m, r, t), n in scored.groupby(["model", "revision", "task"], dropna=False).n.max().items()}
    for model, runs in manifests.items():
        for manifest in runs:  # oldest first: the latest record of a task wins
            for task, record in manifest.tasks.items():
                for variant in list(record.variants) or ["default"]:
                    key = (model, manifest.model.revision, task + ("" if variant == "default" else variant))
                    if key in sizes and record.n is not None:
                        sizes[key] = record.n
    return sizes


def latest_manifest(data: SiteData, model: str, revision: str | None) -> Manifest | None:
    """The latest run manifest of (model, revision), or None."""
    runs = [m for m in data.manifests.get(model, []) if m.model.revision == revision]
    return runs[-1] if runs else None


def of_model(frame: pd.DataFrame, model: str, revision: str | None) -> pd.DataFrame:
    """The rows of one (model, revision)."""
    return frame[(frame.model == model) & (frame.revision.isna() if revision is None else frame.revision == revision)]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with plain Python values (numbers or None), for the templates; a row with a ``note`` is shown muted."""
    out = []
    for record in frame.to_dict("records"):
        row = {k: (None if (not isinstance(v, str) and pd.isna(v)) else (v.item() if hasattr(v, "item") else v)) for k, v in record.items()}
        if row.get("note"):
            row["_class"] = "muted"
        out.append(row)
    return out


def runs_in_progress(data: SiteData) -> list[dict[str, Any]]:
    """The runs whose manifest still says ``running``: still going when the site was built, or killed before any later run
    into the folder could notice (their rows may be partial). Each: model, revision, run id, when it last wrote, its model page."""
    return [{"model": model, "revision": m.model.revision, "run_id": m.run_id, "written": (m.written_at or "?")[:16].replace("T", " "),
             "href": f"models/{model_slug(model, m.model.revision)}.html#provenance"}
            for model, runs in sorted(data.manifests.items()) for m in runs if m.status == "running"]


def model_page(data: SiteData, row: dict[str, Any]) -> dict[str, Any]:
    """The page of one index row's (model, revision): its task table, sections of figures, and its run manifests."""
    from layerbench.site.sections import model_sections

    model, revision = row["model"], row["revision"]
    pages = data.schema["pages"]
    figures: dict[str, Any] = {}
    sections = model_sections(of_model(data.rows, model, revision), data.families, data.mains, data.schema, figures, "m")
    from layerbench.site.index import summary_records

    task_rows = summary_records(of_model(data.table, model, revision).assign(family=lambda t: t.task.map(lambda x: data.families.get(x, "other"))))
    for r in task_rows:
        r["_href_task"] = f"../tasks/{r['task']}.html"
    latest = latest_manifest(data, model, revision)
    runs = [m for m in data.manifests.get(model, []) if m.model.revision == revision]
    return dict(title=model, figures=figures, sections=sections, slug=model_slug(model, revision),
                model={"parameters": latest.model.parameters if latest else None, "n_layers": row["layers"], "revision": revision},
                task_table=table("tasks", pages["model"]["task_columns"] + summary_columns(data.schema), task_rows, decimals=3),
                provenance={"fields": [(c["id"], c["title"]) for c in pages["model"]["provenance_fields"]],
                            "runs": [provenance_row(m, f"{model_slug(model, revision)}/runs/{m.run_id}.json") for m in reversed(runs)]},
                manifest_files={f"models/{model_slug(model, revision)}/runs/{m.run_id}.json": m.to_json() for m in runs})


# The packages a provenance row names (the manifest lists more; its JSON has them all).
PROVENANCE_PACKAGES = ("layerbench", "torch", "transformers", "sentence-transformers", "mteb", "scikit-learn", "numpy")


def provenance_row(manifest: Manifest, raw: str) -> dict[str, Any]:
    """One run's provenance table on the model page: status (and the error of a failed run), when, the model copy and
    its checksum, the main packages, the platform and lock, seconds per stage; ``raw``: the manifest's JSON, linked from the run id."""
    model, env = manifest.model, manifest.environment
    extra = model.model_extra or {}
    source = extra.get("copy_source")
    if source == "hub":
        copy = f"Hub {extra.get('copy_hub_id')}@{str(extra.get('copy_commit') or '?')[:12]}"
    elif source == "packaged":
        copy = f"PyPI {extra.get('copy_distribution')} {extra.get('copy_distribution_version')}"
    else:
        copy = f"{source or 'unknown'} {extra.get('copy_path') or ''}".strip()
    status = manifest.status
    if manifest.error:
        status += f": {manifest.error}" + (f" (task {manifest.error_task})" if manifest.error_task else "")
    fingerprint = env.platform_fingerprint or {}
    cpu = fingerprint.get("cpu") or {}
    platform = " ".join(str(p) for p in (manifest.platform_id, cpu.get("model"), f"{fingerprint['blas_threads']} threads" if "blas_threads" in fingerprint else None,
                                         model.device, env.gpu) if p)
    lock = env.lock or {}
    lock_text = (f"{lock.get('sha256', '?')}, " + ("used" if lock.get("used") else f"{lock.get('mismatched', '?')} package(s) differ")) if lock else "—"
    stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in manifest.timings_seconds.items() if seconds >= 0.5)
    return {"run": manifest.run_id, "_href_run": raw, "status": status, "written": (manifest.written_at or "")[:16].replace("T", " "),
            "tasks": f"{len(manifest.tasks)}: {', '.join(manifest.tasks)}", "copy": f"{copy}; {(model.fingerprint or '?')[:19]}", "dtype": model.dtype,
            "packages": ", ".join(f"{name} {env.packages[name]}" for name in PROVENANCE_PACKAGES if env.packages.get(name)),
            "platform": platform or None, "lock": lock_text, "git": (env.git_sha or "")[:12] + ("-dirty" if (env.git_sha or "").endswith("-dirty") else "") or None,
            "stages": stages or None, "forward_passes": manifest.forward_passes, "_class": "muted" if manifest.status != "complete" else None}


def task_page(data: SiteData, task: str, per_layer: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
    """The page of one task (every model's curves on relative depth, stars at their best layers) and its entry in the task index."""
    pages, schema = data.schema["pages"], data.schema
    main = data.mains.get(task)
    figures: dict[str, Any] = {}
    plots = []
    shown = [main] if main else []
    shown += [m for m in pages["task"]["also_plot"] if m != main and m in set(per_layer.metric)]
    for metric in shown:
        part = per_layer[per_layer.metric == metric]
        part = part.assign(revision=part.revision.astype(object).where(part.revision.notna(), ""))  # "": no revision, a key groupby keeps
        traces = []
        bests = best_layer(part, metric=metric).set_index(["model", "revision", "subset", "split"])
        for i, ((model, revision, subset, split), curve) in enumerate(part.groupby(["model", "revision", "subset", "split"], sort=True)):
            color = fig.PALETTE[i % len(fig.PALETTE)]
            name = f"{model}{'@' + revision if revision else ''} ({subset})"
            traces.append(fig.trace(curve, name, color))
            if (model, revision, subset, split) in bests.index:
                traces.append(fig.best_marker(bests.loc[(model, revision, subset, split)], name, color))
            if metric == main:
                traces += fig.baseline_lines(of_model(data.rows[data.rows.task == task], model, revision or None), schema.get("baselines", {}), model, color)
        if traces:
            figures[f"t-{metric}"] = fig.curve_figure(pages["task"]["figure_title"].format(task=task, metric=metric), traces, metric, pages["depth_axis"],
                                                      legend_below=True)
            plots.append(f"t-{metric}")
    mine = data.table[data.table.task == task]
    from layerbench.site.index import summary_records

    best = summary_records(mine)
    for r in best:
        r["_href_model"] = f"../models/{model_slug(r['model'], r['revision'])}.html"
    family = data.families.get(task, "other")
    page = dict(title=task, figures=figures, plots=plots, description=pages["task"]["description"].format(family=family, metric=main or "—"),
                best_table=table("best", pages["task"]["best_columns"] + summary_columns(schema), best, decimals=3))
    noted = int(mine.note.notna().sum())  # models whose headline for the task is withheld (no concept beyond the baselines)
    entry = {"task": task, "_href_task": f"tasks/{task}.html", "family": family, "metric": main, "models": len(mine[["model", "revision"]].drop_duplicates()),
             "best": fig.number(mine.honest_best_value.combine_first(mine.best_value).max()), "headline": f"{len(mine) - noted}/{len(mine)}" if noted else None}
    if noted and noted == len(mine):
        entry["_class"] = "muted"
    return page, entry


def task_pages(data: SiteData) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every task's page by task, and the task index page."""
    per_layer_by_task = dict(iter(layer_rows(data.rows).groupby("task", sort=False)))
    pages, entries = {}, []
    for task in sorted(data.rows.task.unique()):
        pages[task], entry = task_page(data, task, per_layer_by_task.get(task, data.rows.iloc[:0]))
        entries.append(entry)
    schema = data.schema["pages"]["tasks"]
    return pages, dict(title=schema["title"], task_table=table("tasks", schema["columns"], entries))


