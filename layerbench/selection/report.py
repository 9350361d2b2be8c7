"""Plain-text tables of layer selection for the terminal (``layerbench pick``)."""
from __future__ import annotations

import pandas as pd


def interval_text(value: float, low: float, high: float) -> str:
    """A signed mean and its 95% interval to three decimals: "+0.019 (+0.005 to +0.039)"."""
    return f"{value:+.3f} ({low:+.3f} to {high:+.3f})"


def column_interval(row, name: str) -> str:
    """:func:`interval_text` of a summary row's ``name``, ``name_low`` and ``name_high`` (a dict or a pandas row)."""
    return interval_text(row[name], row[f"{name}_low"], row[f"{name}_high"])


def format_summary(table: pd.DataFrame) -> str:
    """The scored methods, one line each, best (least regret) first: :func:`~layerbench.selection.selection_summary`
    rows with ``kind``."""
    lines = [f"{'method':32} {'kind':9} {'regret (95% CI)':26} {'gain over last (95% CI)':26} {'within 0.01':>11} {'beats last':>10} {'Spearman':>8}"]
    for row in table.itertuples():
        lines.append(f"{row.method:32} {row.kind or '':9} {interval_text(row.regret, row.regret_low, row.regret_high):26} "
                     f"{interval_text(row.gain, row.gain_low, row.gain_high):26} {row.near_oracle:>11.0%} {f'{row.beats_last}/{row.curves}':>10} {'' if pd.isna(row.spearman) else f'{row.spearman:+.2f}':>8}")
    return "\n".join(lines)


def format_picks(picks: pd.DataFrame) -> str:
    """A layer per (model, task): :func:`~layerbench.selection.recommend` rows, with the best layer by the task's labels
    beside it where the rows have them."""
    lines = [f"{'model':40} {'task':30} {'layer':>5} {'of':>3} {'depth':>5}   {'score':>6} {'best layer':>10} {'best':>6}"]
    for row in picks.sort_values(["model", "task"]).itertuples():
        known = pd.notna(row.best_layer)
        lines.append(f"{row.model:40} {row.task:30} {row.picked_layer:>5} {row.last_layer:>3} {row.picked_depth:>5.2f}   "
                     + (f"{row.picked_score:>6.3f} {int(row.best_layer):>10} {row.best_score:>6.3f}" if known else f"{'':>6} {'(no labels)':>10}"))
    return "\n".join(lines)
