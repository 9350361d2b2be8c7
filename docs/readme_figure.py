"""The README's figure, taken from the built leaderboard site (``make site`` runs it; never drawn by hand).

Opens a page of the site in headless Chromium (Debian's, through playwright, as the site test does) and saves one
plot or table as a PNG, at twice the CSS pixel size, exactly as a visitor sees it.

    python docs/readme_figure.py SITE_DIR PAGE ELEMENT_ID OUT.png
    python docs/readme_figure.py site models/gemma3-270m-base-q4.html m-depth-heatmap docs/figures/gemma3-tasks-by-depth.png
    python docs/readme_figure.py site index.html models docs/figures/leaderboard-index.png 1400   (a window 1,400 pixels wide)
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def save_plot(site: Path, page: str, element: str, out: Path, width: int = 1300) -> None:
    """Save the plot or table ``#element`` of ``site/page`` as a PNG at ``out`` (a browser window ``width`` CSS pixels wide)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    target = (site / page).resolve()
    if not target.is_file():
        raise SystemExit(f"error: {target} does not exist; build the site first (make site)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        view = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=2)
        view.goto(target.as_uri())
        view.wait_for_selector(f"#{element}")
        if view.locator(f"#{element}.js-plotly-plot").count():  # a plot: wait until Plotly has drawn it (a table is there at load)
            view.wait_for_selector(f"#{element}.js-plotly-plot .main-svg")
        out.parent.mkdir(parents=True, exist_ok=True)
        view.locator(f"#{element}").screenshot(path=str(out))
        browser.close()


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        raise SystemExit(__doc__)
    save_plot(Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4]), *(int(w) for w in sys.argv[5:]))
    print(f"wrote {sys.argv[4]}")
