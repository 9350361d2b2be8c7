"""The metrics page: per label-free metric, how well it picks each (model, task)'s best layer, with figures and a verdict."""
from __future__ import annotations

from typing import Any

import pandas as pd

from layerbench.analysis import equivalent_metrics, metric_pick_summary
from layerbench.site import figures as fig
from layerbench.site.view import BEATS_MARGIN, SiteData, records, table


def metrics_page(data: SiteData) -> dict[str, Any]:
    """The metrics page: per label-free metric, how well it picks each (model, task)'s best layer, with figures and a verdict."""
    schema = data.schema["pages"]["metrics"]
    picks_of = metric_pick_summary(data.rows, data.mains)
    # Metrics that order every model's and task's layers alike are one picker: one row, one bar, named by its group.
    groups = equivalent_metrics(picks_of)
    for group in groups:
        for other in group[1:]:
            del picks_of[other]
    label = {group[0]: f"{group[0]} (= {', '.join(group[1:])})" for group in groups}
    short = {group[0]: f"{group[0]} (+{len(group) - 1})" for group in groups}
    directions = schema["directions"]
    summary_rows, details = [], []
    for name, picks in picks_of.items():
        picks_layers = bool(picks.picks_layers.iloc[0])  # a descriptive metric has no best layer: it "picks" the last
        direction = picks.direction.iloc[0]
        summary_rows.append({"metric": label.get(name, name), "direction": directions["none" if direction is None else "higher" if direction else "lower"],
                             "pairs": len(picks), "models": picks.model.nunique(), "spearman": fig.number(picks.spearman.mean()),
                             "beats_last": f"{int((picks.gain > BEATS_MARGIN).sum())}/{len(picks)}" if picks_layers else None,
                             "picked_gain": fig.number(picks.gain.mean()) if picks_layers else None, "ceiling": fig.number(picks.ceiling.mean()),
                             "regret": fig.number((picks.ceiling - picks.gain).mean()) if picks_layers else None,
                             "per_model": {m: float(g.gain.mean()) for m, g in picks.groupby("model")} if picks_layers else {}})
        details += [{"metric": label.get(name, name), **r} for r in records(picks.drop(columns=["gain", "ceiling", "naive_ceiling", "higher_is_better", "picks_layers", "direction"]))]
    picks_of = {short.get(name, name): picks for name, picks in picks_of.items()}  # the charts' category names
    figures: dict[str, Any] = {}
    if picks_of:
        models = sorted({m for p in picks_of.values() for m in p.model})
        mean_of = {m: {n: (p[p.model == m].spearman.mean() if (p.model == m).any() else None) for n, p in picks_of.items()} for m in models}
        figures["spearman"] = fig.grouped_bars(mean_of, schema["spearman_title"], schema["spearman_y_title"])
        picking = [n for n, r in zip(picks_of, summary_rows) if r["picked_gain"] is not None]
        gains = {m: {n: (picks_of[n][picks_of[n].model == m].gain.mean() if (picks_of[n].model == m).any() else None) for n in picking} for m in models}
        ceiling = {m: float(pd.concat([p[p.model == m] for p in picks_of.values()]).drop_duplicates("task").ceiling.mean()) for m in models}
        diamonds = [fig.markers(picking, [ceiling[m]] * len(picking), f"best layer: {m}", fig.PALETTE[i % len(fig.PALETTE)], "best - last", m)
                    for i, m in enumerate(models)]
        figures["gain"] = fig.grouped_bars(gains, schema["gain_title"], schema["gain_y_title"], diamonds)
    pairs = max((r["pairs"] for r in summary_rows), default=0)
    alike = [schema["equivalent"].format(names=", ".join(group[:-1]) + " and " + group[-1], pairs=pairs, relations=_relations(group)) for group in groups]
    return dict(title=schema["title"], figures=figures, verdict=verdict(summary_rows, schema["verdict"]), models=sorted(data.rows.model.unique()), alike=alike,
                plots=list(figures), metric_table=table("metrics", schema["columns"], summary_rows), detail_table=table("details", schema["detail_columns"], details))


def _relations(group: list[str]) -> str:
    """How the metrics of ``group`` derive from one another, from their registered descriptions ("" when none says)."""
    from layerbench.metrics import get as get_metric

    said = [f"{name} = {get_metric(name).description.split(':')[0]}" for name in group if get_metric(name).derived_from in group]
    return f" ({'; '.join(said)})" if said else ""


def verdict(summary_rows: list[dict[str, Any]], sentences: dict[str, str]) -> str:
    """One honest paragraph on whether any label-free metric picks better layers than simply taking the last one (the schema's sentences)."""
    if not summary_rows:
        return sentences["empty"]
    directed = [r for r in summary_rows if r["picked_gain"] is not None]
    winners = sorted((r for r in directed if r["picked_gain"] > BEATS_MARGIN), key=lambda r: -r["picked_gain"])
    pairs = max(r["pairs"] for r in summary_rows)
    ceiling = f"{max((r['ceiling'] for r in summary_rows if r['ceiling'] is not None), default=0.0):+.3f}"
    local = [f"{r['metric']} on {m} ({g:+.3f})" for r in directed for m, g in sorted(r["per_model"].items()) if g > BEATS_MARGIN]
    on_some = sentences["on_some"].format(listed=", ".join(local)) if local else ""
    if not winners:
        best = max(directed, key=lambda r: r["picked_gain"]) if directed else None
        gain = f"{best['picked_gain']:+.3f}" if best and abs(best["picked_gain"]) > BEATS_MARGIN else sentences["level"]
        closest = sentences["closest"].format(metric=best["metric"], gain=gain) if best else ""
        return sentences["none_beats"].format(pairs=pairs, closest=closest, on_some=on_some, ceiling=ceiling)
    listed = ", ".join(sentences["winner"].format(metric=r["metric"], gain=f"{r['picked_gain']:+.3f}", beats_last=r["beats_last"]) for r in winners)
    return sentences["some_beat"].format(pairs=pairs, winners=len(winners), directed=len(directed), listed=listed, ceiling=ceiling)
