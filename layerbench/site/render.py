"""Writing the site: pages rendered from the view model with the Jinja2 templates, the assets, and the rows as data files."""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerbench.errors import UserError
from layerbench.site.index import IndexCell
from layerbench.site.view import PARTS


def fmt(value: Any, decimals: int | None = None, style: str | None = None) -> str:
    """Table cell text: numbers with 4 significant digits, or ``decimals`` digits after the point (integers as they are),
    ``style="millions"`` as 268M; missing values as an em dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if style == "millions" and isinstance(value, (int, float, np.integer, np.floating)):
        return f"{float(value) / 1e6:,.0f}M"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        if decimals is not None:
            return f"{float(value):.{decimals}f}"
        return f"{float(value):.4g}" if abs(float(value)) < 1e5 else f"{float(value):,.0f}"
    return str(value)


class Renderer:
    """Renders the templates of ``leaderboard/templates`` into a site folder (``render(template, path under it, **context)``)."""

    def __init__(self, out: Path) -> None:
        import jinja2

        self.out = out
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(PARTS / "templates"), autoescape=True, undefined=jinja2.StrictUndefined)
        self.env.filters["fmt"] = fmt
        self.env.tests["index_cell"] = lambda value: isinstance(value, IndexCell)

    def render(self, template: str, target: str, **context: Any) -> None:
        path = self.out / target
        path.parent.mkdir(parents=True, exist_ok=True)
        root = "../" * target.count("/")
        path.write_text(self.env.get_template(template).render(root=root, figures=context.pop("figures", {}), **context), encoding="utf-8")


def write_data(rows: pd.DataFrame, out: Path) -> None:
    """The rows the site was built from, as ``data/results.csv`` and ``data/results.parquet``."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    rows.to_csv(out / "data" / "results.csv", index=False)
    rows.to_parquet(out / "data" / "results.parquet", index=False)


def write_files(out: Path, files: dict[str, bytes]) -> None:
    """Each ``files`` entry (path under ``out`` -> bytes) written as is (the manifests a model page links to)."""
    for target, content in files.items():
        path = out / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def copy_assets(target: Path) -> None:
    """Plotly's bundle (from the plotly package) and the site's script and style, so the pages open offline."""
    import plotly

    target.mkdir(parents=True, exist_ok=True)
    bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not bundle.is_file():
        raise UserError(f"the plotly package has no JavaScript bundle at {bundle}; reinstall plotly")
    shutil.copyfile(bundle, target / "plotly.min.js")
    for name in ("site.js", "site.css"):
        shutil.copyfile(PARTS / "static" / name, target / name)
