"""The index page's rows: one per (model, revision), with a typed :class:`IndexCell` per headline column of the schema."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from layerbench.analysis import reference_signatures, task_signatures, why_apart
from layerbench.families import Headline, all_families, all_headlines
from layerbench.results import model_slug
from layerbench.selection import DEFAULT_METHOD, model_layer
from layerbench.site import figures as fig
from layerbench.site.view import BEATS_MARGIN, SiteData, latest_manifest, of_model, records, revision_of


@dataclass(frozen=True)
class IndexCell:
    """One headline cell of the index: what a model scores on a column, and what that rests on.

    Attributes:
        status: ``value``; ``withheld`` (the tasks ran, but the headline rests on fewer items than its family's minimum);
            ``none`` (the tasks ran and none has the headline: no layer decides); ``not run`` (no task of the column ran).
        value: the number (a mean over tasks) or "k/n" (``count_beyond_zero``); None unless ``status`` is ``value``.
        n: what it rests on ("n=562, 2 of 3 tasks", "3 tasks"), why it is withheld ("n=8 < 20"), or how many tasks have
            none ("0 of 3 tasks"); None where nothing ran.
        interval: the 95% interval (low, high) of a mean, where every task of it has one.
        naive: beside a selection-honest best or gain, the naive one (the layer chosen and scored on the same items),
            averaged over the same tasks, printed in small type; None elsewhere.
    """

    status: Literal["value", "withheld", "none", "not run"]
    value: float | str | None = None
    n: str | None = None
    interval: tuple[float, float] | None = None
    naive: float | None = None

    @property
    def shown(self) -> float | str | None:
        """What the cell prints before its interval and n: the value, the words "withheld" or "none", or nothing."""
        return self.value if self.status == "value" else None if self.status == "not run" else self.status


def summary_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """:func:`records` of summary rows (:func:`layerbench.summary`) with each task's best as the pages show it: the
    selection-honest best and gain (chosen on half the items, scored on the other half) as typed cells with their 95%
    intervals and the naive maximum beside them, and the honest pick's layer and depth; a task without item records keeps
    its naive best, and its ``honest_note`` says so."""
    out = records(frame)
    for row in out:
        for column in ("best_layer", "last_layer", "honest_best_layer", "n_layers"):  # layer numbers (float where a task has none) print as integers
            if isinstance(row.get(column), float):
                row[column] = int(row[column])
        if row.get("honest_best_value") is None:
            continue
        row["best_value"] = IndexCell("value", row["honest_best_value"], interval=(row["honest_best_value_low"], row["honest_best_value_high"]),
                                      naive=row["best_value"])
        row["gain"] = IndexCell("value", row["honest_gain"], interval=(row["honest_gain_low"], row["honest_gain_high"]), naive=row["gain"])
        row["best_layer"], row["best_depth"] = row["honest_best_layer"], row["honest_best_depth"]
    return out


def index_cell(part: pd.DataFrame, field: str, statistic: str, naive_field: str | None = None) -> IndexCell:
    """The cell of a column over one model's summary rows of the column's tasks (``part``); ``naive_field``: the column whose
    mean over the same tasks the cell shows beside its value (the naive best beside the selection-honest one)."""
    value, n = _aggregate(part, field, statistic), _cell_n(part, field)
    if value is not None:
        naive = fig.number(part.loc[part[field].notna(), naive_field].astype(float).mean()) if naive_field else None
        return IndexCell("value", value, n, _cell_interval(part, field) if statistic == "mean" else None, naive)
    withheld = _withheld(part, field)
    if withheld:
        return IndexCell("withheld", n=withheld)
    return IndexCell("none", n=n) if n else IndexCell("not run")


def _aggregate(part: pd.DataFrame, field: str, statistic: str) -> Any:
    """An index cell: the ``mean`` of the defined values of ``field``, or ``count_beyond_zero`` as "k/n" (the tasks whose
    95% interval, ``<field>_low``, lies above 0, and by at least what the pages print); None when there are none."""
    defined = part[part[field].notna()]
    if defined.empty:
        return None
    if statistic == "mean":
        return fig.number(defined[field].astype(float).mean())
    if statistic == "count_beyond_zero":
        low = defined[f"{field}_low"].astype(float)
        return f"{int(((low > 0) & (defined[field].astype(float) > BEATS_MARGIN)).sum())}/{len(defined)}"
    raise ValueError(f"schema.yaml: unknown statistic '{statistic}'; use mean or count_beyond_zero")


def _cell_n(part: pd.DataFrame, field: str) -> str | None:
    """What an index cell rests on: its tasks for a mean over tasks, its items for a headline summary (``<field>_n``),
    and ", k of m tasks" where m tasks ran but only k have the headline (the others' rows say why: no layer decides,
    no concept beyond the baseline), so that a mean over fewer tasks says so; "0 of m tasks" where none has it."""
    defined = part[part[field].notna()]
    ran = int(part[f"{field}_n"].notna().sum()) if f"{field}_n" in part else 0
    if defined.empty:
        return f"0 of {ran} task" + "s" * (ran != 1) if ran else None
    if f"{field}_n" in defined:
        return f"n={int(defined[f'{field}_n'].sum())}" + (f", {len(defined)} of {ran} tasks" if ran > len(defined) else "")
    return f"{len(defined)} task" + "s" * (len(defined) != 1)


def _withheld(part: pd.DataFrame, field: str) -> str | None:
    """Why a headline cell has no value though the task ran: "n=8 < 20" where the summary withheld it for resting on
    fewer items than its family's minimum (:attr:`layerbench.families.Headline.min_n`), else None."""
    minimum = next((h.min_n for h in all_headlines() if h.column == field and h.min_n), None)
    if minimum is None or f"{field}_n" not in part:
        return None
    held = part[part[field].isna() & part[f"{field}_n"].notna()]
    return f"n={int(held[f'{field}_n'].sum())} < {minimum}" if not held.empty else None


def _cell_interval(part: pd.DataFrame, field: str) -> tuple[float, float] | None:
    """An index cell's 95% interval (low, high): its task's own (``<field>_low``, ``<field>_high``), or for a mean of
    k tasks, mean -+ 1.96 sqrt(sum se_i^2) / k with each se_i its interval's half width / 1.96 (the tasks' items are
    apart); None where a task of the mean has no interval (its rows carry no stderr)."""
    if f"{field}_low" not in part:
        return None
    defined = part[part[field].notna()]
    low, high = defined[f"{field}_low"].astype(float), defined[f"{field}_high"].astype(float)
    if defined.empty or low.isna().any() or high.isna().any():
        return None
    if len(defined) == 1:
        bounds = (low.iloc[0], high.iloc[0])
    else:
        half = float(np.sqrt((((high - low) / 2) ** 2).sum()) / len(defined))
        mean = float(defined[field].astype(float).mean())
        bounds = (mean - half, mean + half)
    return float(bounds[0]), float(bounds[1])


def unfinished_reason(data: SiteData, model: str, revision: str | None) -> str | None:
    """Why a model's results are unfinished, from its manifests alone: the tasks that an interrupted or failed run meant to
    run (its resolved ``config.tasks``) and that no run of the model recorded (a decoder stopped before back-patching would
    otherwise look like an encoder, which has none); None when there are none."""
    runs = [m for m in data.manifests.get(model, []) if m.model.revision == revision]
    recorded = {task for m in runs for task in m.tasks}
    planned = [task for m in runs if m.status in ("interrupted", "failed") for task in (m.config.get("tasks") or [])]
    missing = sorted(set(planned) - recorded)
    return f"unfinished: a run stopped before {', '.join(missing)}" if missing else None


def index_rows(data: SiteData) -> list[dict[str, Any]]:
    """One index row per (model, revision): the model's columns, an :class:`IndexCell` per headline column of the schema, and
    ``apart``: why it is not ranked, else None."""
    signatures = task_signatures(data.table, data.families, data.sizes)
    reference = reference_signatures(signatures)
    picks = data.selection.picks
    picked = model_layer(picks[picks.method == DEFAULT_METHOD]) if not picks.empty else pd.DataFrame(columns=["model", "layer", "depth"])
    picked = dict(zip(picked.model, picked.layer))
    out = []
    for (model, revision), group in data.table.groupby(["model", "revision"], dropna=False, sort=True):
        revision = revision_of(revision)
        latest = latest_manifest(data, model, revision)
        row: dict[str, Any] = {"model": model, "_href_model": f"models/{model_slug(model, revision)}.html", "revision": revision,
                               "parameters": latest.model.parameters if latest else None, "layers": int(of_model(data.rows, model, revision).n_layers.max()),
                               "tasks": int(group.task.nunique()),
                               "apart": "; ".join(filter(None, [unfinished_reason(data, model, revision), why_apart(signatures[(model, revision)], reference)])) or None}
        # The layers, with the layer picked without labels under them (layerbench.selection's default method).
        row["layers_cell"] = IndexCell("value", row["layers"], f"pick {int(picked[model])}") if model in picked else row["layers"]
        group = group.assign(family=group.task.map(lambda t: data.families.get(t, "other")))
        for column in index_columns(data.schema):
            if "field" not in column:
                continue
            part = group
            if "family" in column:
                part = part[part.family == column["family"]]
            if "protocol" in column:
                part = part[part.protocol == column["protocol"]]
            if "over" in column:
                part = part[part[column["over"]].notna()]
            row[column["id"]] = index_cell(part, column["field"], column["statistic"], column.get("naive_field"))
        out.append(row)
    return out


def index_columns(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The index's columns: group by group (the schema's order), the schema's own columns of the group, then the headlines
    of the group's ``family`` under ours, and for a group of ``protocols: paper`` every family's paper protocols' headlines
    (:meth:`~layerbench.families.Family.headlines_under`), families in the schema's order. The headlines come from the
    registry: the schema says only where they go."""
    families = all_families()
    ordered = [name for name in schema.get("families", []) if name in families] + [name for name in families if name not in schema.get("families", [])]
    out = []
    for group in schema["index_groups"]:
        out += [c for c in schema["index_columns"] if c.get("group") == group["id"]]
        if group.get("family") in families:
            out += [_headline_column(h, group["id"], None) for h in families[group["family"]].headlines]
        if group.get("protocols") == "paper":
            out += [_headline_column(h, group["id"], p.name) for name in ordered for p in families[name].protocols
                    for h in families[name].headlines_under(p.name)]
    return out


def index_groups(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema's index groups; a group of a family with no ``about`` of its own says what its headlines are."""
    families = all_families()
    return [{**group, "about": " ".join(h.about for h in families[group["family"]].headlines if h.about)}
            if "about" not in group and group.get("family") in families else group for group in schema["index_groups"]]


def _headline_column(headline: Headline, group: str, protocol: str | None) -> dict[str, Any]:
    """An index column of a headline: ours (``protocol`` None) or a paper protocol's, titled with the protocol's name in parentheses; ``headline``
    keeps the record (what its n counts, for the README's sentence). Its tasks are those with the column (no ``family``
    filter: a result folder's task whose manifest is missing still shows its headline)."""
    return {"id": headline.key if protocol is None else f"{headline.key}@{protocol}", "title": headline.title if protocol is None else f"{headline.title} ({protocol})",
            "group": group, "protocol": protocol or "layerbench", "field": headline.column, "statistic": headline.statistic,
            "text": headline.statistic == "count_beyond_zero", "headline": headline}
