"""The page "Layer selection without labels": every label-free method's regret and gain over the last layer, per task
family, with intervals, and each model's picked against its best layers on the depth axis (:mod:`layerbench.selection`)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from layerbench.selection import DEFAULT_METHOD
from layerbench.selection.report import column_interval
from layerbench.selection.scoring import NEAR_ORACLE
from layerbench.site import figures as fig
from layerbench.site.view import SiteData, records, table

# The methods drawn on the depth plot, in its drop-down's order (the table has them all).
DEPTH_PLOT_METHODS = (DEFAULT_METHOD, "learned-lomo", "last", "li2025", "valeriani2023", "cheng2025")


def selection_page(data: SiteData) -> dict[str, Any]:
    """The page's title, sentences, figures and tables from :attr:`SiteData.selection`."""
    schema = data.schema["pages"]["selection"]
    result = data.selection
    if result.picks.empty:
        return dict(title=schema["title"], intro=schema["intro"], verdict=schema["empty"], figures={}, plots=[], method_table=None, family_table=None,
                    detail_table=None)
    described = [_with_cells(row) for row in records(result.summary)]
    by_family = [_with_cells(row) for row in records(result.by_family.sort_values(["family", "regret"]))]
    order = result.summary.method.tolist()
    series = {"all": result.summary.set_index("method")} | {f: g.set_index("method") for f, g in result.by_family.groupby("family", sort=True)}
    figures = {name: fig.interval_bars({s: {m: (float(f.loc[m, name]), float(f.loc[m, f"{name}_low"]), float(f.loc[m, f"{name}_high"]))
                                            for m in order if m in f.index} for s, f in series.items()}, schema[f"{name}_title"], schema[f"{name}_y_title"])
               for name in ("regret", "gain")}
    best = result.picks[result.picks.method == "oracle"][["model", "task", "picked_depth"]].rename(columns={"picked_depth": "best_depth"})
    points = {m: result.picks[result.picks.method == m][["model", "task", "picked_depth"]].merge(best, on=["model", "task"])
              for m in DEPTH_PLOT_METHODS if m in set(result.picks.method)}
    figures["depth"] = fig.picked_against_best(points, schema["depth_title"], data.schema["pages"]["depth_axis"], schema["depth_y_title"])
    shown = result.picks[result.picks.method.isin([DEFAULT_METHOD, "learned-lomo", "oracle"])]
    detail = shown.drop(columns=["revision", "protocol", "site", "oracle"]).sort_values(["model", "task", "method"])
    return dict(title=schema["title"], intro=schema["intro"].format(near=NEAR_ORACLE), verdict=verdict(result.summary, result.by_family, schema["verdict"]),
                figures=figures, plots=list(figures),
                method_table=table("methods", schema["columns"], described, decimals=3),
                family_table=table("families", schema["family_columns"], by_family, decimals=3),
                detail_table=table("picks", schema["detail_columns"], records(detail), decimals=3))


def _with_cells(row: dict[str, Any]) -> dict[str, Any]:
    """A summary row with the text cells its table shows: regret and gain with their intervals, the share within
    :data:`NEAR_ORACLE` of the oracle, and "k/n" curves where the pick beats the last layer."""
    return {**row, "regret_cell": column_interval(row, "regret"), "gain_cell": column_interval(row, "gain"), "within": f"{row['near_oracle']:.0%}",
            "beats": f"{row['beats_last']}/{row['curves']}"}


def verdict(overall: pd.DataFrame, by_family: pd.DataFrame, sentences: dict[str, str]) -> str:
    """Which label-free methods beat the last layer (their gain's interval above 0), the best one's regret against the
    goal of :data:`NEAR_ORACLE`, and the families where it falls short; the schema's sentences."""
    free = overall[~overall.method.isin(["oracle", "last"])]
    best = free.sort_values("regret").iloc[0]
    last = overall.set_index("method").loc["last"]
    winners = free[free.gain_low > 0].sort_values("gain", ascending=False)
    listed = ", ".join(sentences["winner"].format(method=r.method, gain=f"{r.gain:+.3f}", low=f"{r.gain_low:+.3f}", high=f"{r.gain_high:+.3f}")
                       for r in winners.itertuples())
    beat = sentences["some_beat"].format(listed=listed) if len(winners) else sentences["none_beats"]
    per_family = by_family[by_family.method == best.method].set_index("family").regret
    short = [f"{f} {r:+.3f}" for f, r in per_family.items() if r > NEAR_ORACLE]
    goal = sentences["goal_met"] if best.regret <= NEAR_ORACLE else sentences["goal_missed"].format(by=f"{best.regret - NEAR_ORACLE:.3f}", families=", ".join(short) or "none")
    return sentences["summary"].format(curves=int(best.curves), models=int(best.models), last=f"{last.regret:+.3f}", method=best.method,
                                       regret=f"{best.regret:+.3f}", low=f"{best.regret_low:+.3f}", high=f"{best.regret_high:+.3f}", beat=beat, goal=goal,
                                       near=NEAR_ORACLE)
