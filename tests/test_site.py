"""The leaderboard site: built from the committed results, checked in a real headless Chromium (Debian's, driven by Playwright)."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from layerbench.results import load_results, model_slug
from layerbench.site import build_site

RESULTS = Path(__file__).parent.parent / "results"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Screenshots go here (CI keeps the folder as an artifact).
ARTIFACTS = Path(os.environ.get("LAYERBENCH_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))
# Chromium must not reach for the network (this machine has none; DESIGN §5).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_site([RESULTS], out)
    return out


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_the_site_holds_every_model_and_task_of_the_results(site):
    rows = load_results(RESULTS)
    index = (site / "index.html").read_text()
    # the four offline models of three architectures (BERT, Llama, Gemma 3; two encoders, two decoders)
    assert {"sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4", "multilingual-e5-small-q4", "gemma3-270m-base-q4"} <= set(rows.model)
    for model, revision in rows[["model", "revision"]].drop_duplicates().itertuples(index=False):
        slug = model_slug(model, None if pd.isna(revision) else revision)
        assert model in index and (site / "models" / f"{slug}.html").is_file()
    tasks_page = (site / "tasks.html").read_text()
    for task in rows.task.unique():
        assert (site / "tasks" / f"{task}.html").is_file() and f'href="tasks/{task}.html"' in tasks_page
    assert len(load_results(site / "data" / "results.parquet")) == len(rows)  # the download holds every row


def test_every_link_resolves_and_nothing_reaches_the_network(site):
    for page in _pages(site):
        html = page.read_text()
        for target in re.findall(r'(?:href|src)="([^"#]+)', html):
            if target.startswith("data:"):  # inline, e.g. the empty favicon
                continue
            assert not urlparse(target).scheme, f"{page.name} links outside the site: {target}"
            assert (page.parent / target).resolve().is_file(), f"{page.relative_to(site)}: broken link {target}"


@contextlib.contextmanager
def _served(folder: Path):
    """``folder`` over HTTP on a free local port (yields the base URL).

    Chromium caches Plotly's compiled script between http pages, not between
    file:// pages, so the page loads cost half as much; one page is also
    opened from disk, as a reader of ``site/index.html`` does.
    """
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian chromium is not installed (.ci/run installs it)")
def test_pages_load_sort_and_plot_in_headless_chromium(site):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p, _served(site) as base:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(f"{page.url}: {message.text}") if message.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        # Every page over HTTP, and the first task page also from disk.
        first_task = next(html for html in _pages(site) if html.parent.name == "tasks")
        shots = {"tasks_mteb-bbc-clustering": "task", "models_gemma3-270m-base-q4": "model"}
        for url, html in [(base + html.relative_to(site).as_posix(), html) for html in _pages(site)] + [(first_task.as_uri(), first_task)]:
            page.goto(url)
            page.wait_for_load_state("load")
            # Every plot was drawn, and every trace of it has data points.
            plots = page.evaluate("""() => Array.from(document.querySelectorAll('.plot')).map(el => ({
                id: el.id, drawn: el.classList.contains('js-plotly-plot'),
                points: (el.data || []).map(t => t.type === 'heatmap' ? (t.z || []).length : (t.x || []).length)}))""")
            for plot in plots:
                assert plot["drawn"] and plot["points"] and min(plot["points"]) > 0, (url, plot)
            name = str(html.relative_to(site)).replace("/", "_").removesuffix(".html")
            if url.startswith("http") and (html.parent == site or name in shots):  # one screenshot of each page kind
                page.screenshot(path=str(ARTIFACTS / f"site_{shots.get(name, name)}.png"), full_page=False)
                if page.locator("#m-depth-heatmap").count():
                    page.locator("#m-depth-heatmap").screenshot(path=str(ARTIFACTS / "site_model_tasks_by_depth.png"))
        assert not errors, errors

        # A model page is mostly plots: its provenance is a short table per run (the JSON behind a link), its notes are
        # readable where they are listed (wrapped, none wider than the page), and a menu picks the label-free metric, named on the axis.
        page.goto(base + "models/smollm2-135m-q4.html")
        page.wait_for_load_state("load")
        layout = page.evaluate("""() => {
            const height = document.documentElement.scrollHeight;
            const plots = new Set(Array.from(document.querySelectorAll('.plot')).map(el => {
                const box = el.getBoundingClientRect(); return Math.round(box.top + window.scrollY) + ':' + Math.round(box.height); }));
            const plotRows = Array.from(plots).reduce((sum, key) => sum + Number(key.split(':')[1]), 0);  // side by side counts once
            const provenance = document.getElementById('provenance').getBoundingClientRect().top + window.scrollY;
            const notes = Array.from(document.querySelectorAll('ol.notes li')).map(li => ({
                text: li.textContent, right: li.getBoundingClientRect().right, clipped: li.scrollWidth > li.clientWidth}));
            return {height, plotRows, provenanceHeight: height - provenance, pre: document.querySelectorAll('pre').length, notes,
                    runs: Array.from(document.querySelectorAll('table.run caption a')).map(a => a.getAttribute('href'))};
        }""")
        assert layout["plotRows"] > 0.7 * layout["height"], layout  # 0.77 for SmolLM2 when written
        assert layout["pre"] == 0 and layout["provenanceHeight"] < 0.1 * layout["height"], layout
        assert layout["runs"] and all((site / "models" / href).is_file() for href in layout["runs"])
        undecided = next(n for n in layout["notes"] if "latent-language-translation" in n["text"])
        assert "the target language leads in no layer for most prompts" in undecided["text"]
        assert all(not n["clipped"] and n["right"] <= 1300 for n in layout["notes"]), layout["notes"]
        page.locator("#tasks a.note-ref").first.click()  # a greyed-out row's link goes to its note
        assert page.evaluate("() => location.hash").startswith("#tasks-note-")
        plot = "m-concept-capitals-metrics"
        shown = f"() => {{ const el = document.getElementById('{plot}'); return [el.layout.yaxis.title.text, el.data.filter(t => t.visible === true).map(t => t.name)]; }}"
        assert page.evaluate(shown) == ["anisotropy (cosine)", ["anisotropy"]]
        page.select_option(f"select[data-plot={plot}]", label="lidar (directions)")
        page.wait_for_function(f"() => document.getElementById('{plot}').layout.yaxis.title.text.startsWith('lidar')")
        assert page.evaluate(shown) == ["lidar (directions)", ["lidar"]]

        # The model table sorts on a click: by layers, ascending then descending.
        page.goto(base + "index.html")
        header = page.locator("#models tr.columns th", has_text=re.compile(r"^layers$"))
        column = page.evaluate("() => Array.from(document.querySelectorAll('#models tr.columns th')).findIndex(th => th.textContent.trim() === 'layers')")
        read = f"() => Array.from(document.querySelectorAll('#models tbody tr')).map(r => parseFloat(r.cells[{column}].textContent))"
        header.click()
        assert page.evaluate(read) == sorted(page.evaluate(read))
        header.click()
        assert page.evaluate(read) == sorted(page.evaluate(read), reverse=True)
        # The filter hides the rows that do not match.
        page.fill("input[data-table=models]", "MiniLM")
        visible = page.evaluate("() => Array.from(document.querySelectorAll('#models tbody tr')).filter(r => !r.hidden).map(r => r.cells[0].textContent)")
        assert visible and all("MiniLM" in v for v in visible)
        page.fill("input[data-table=models]", "")

        # The index reads at 1,400 pixels: columns grouped by family under a header row, the paper protocols' group hidden
        # until its box is ticked, the whole table in the window without them, the model column in view while the table
        # scrolls sideways, scores to three decimals with their counts apart.
        page.set_viewport_size({"width": 1400, "height": 900})
        index = """() => {
            const table = document.getElementById('models'), wrap = table.parentElement;
            const visible = (el) => !el.hidden && el.getBoundingClientRect().width > 0;
            const groups = Array.from(table.querySelectorAll('tr.groups th')).filter(visible).map(th => th.textContent.trim());
            const paper = Array.from(table.querySelectorAll('tr.columns th.g-paper'));
            const scores = Array.from(table.querySelectorAll('tbody td[data-value]')).filter(visible)
                .map(td => td.firstChild.textContent.trim()).filter(text => /^-?[0-9.]+$/.test(text) && text.includes('.'));
            return {groups, paperShown: paper.filter(visible).length, paper: paper.length, tableWidth: table.getBoundingClientRect().width,
                    window: window.innerWidth, wrapWidth: wrap.clientWidth, scores};
        }"""
        seen = page.evaluate(index)
        assert seen["groups"][:3] == ["model", "concept probing", "MTEB"] and "paper protocols" not in seen["groups"], seen["groups"]
        assert seen["paper"] >= 3 and seen["paperShown"] == 0
        assert seen["tableWidth"] <= seen["wrapWidth"] <= seen["window"], seen
        assert seen["scores"] and all(len(text.split(".")[1]) == 3 for text in seen["scores"]), seen["scores"]
        page.check("input.group-toggle[data-group=paper]")
        seen = page.evaluate(index)
        assert "paper protocols" in seen["groups"] and seen["paperShown"] == seen["paper"]
        page.set_viewport_size({"width": 900, "height": 900})  # narrow: the table scrolls inside its wrapper
        sticky = page.evaluate("""() => {
            const wrap = document.querySelector('#models').parentElement;
            wrap.scrollLeft = wrap.scrollWidth;
            const first = document.querySelector('#models tbody td:first-child').getBoundingClientRect();
            return {scrolled: wrap.scrollLeft, left: first.left, wrapLeft: wrap.getBoundingClientRect().left};
        }""")
        assert sticky["scrolled"] > 100 and abs(sticky["left"] - sticky["wrapLeft"]) < 2, sticky
        page.screenshot(path=str(ARTIFACTS / "site_index_scrolled.png"), full_page=False)

        # A model page reads at 1,400 pixels: the page never scrolls sideways; its task table, rounded as the index is (three
        # decimals, intervals in small type), scrolls inside its own box where it is wider, the task column staying in view.
        page.set_viewport_size({"width": 1400, "height": 900})
        page.goto(base + "models/smollm2-135m-q4.html")
        page.wait_for_load_state("load")
        model = page.evaluate("""() => {
            const table = document.getElementById('tasks'), wrap = table.parentElement;
            const numbers = Array.from(table.querySelectorAll('tbody td[data-value]')).map(td => td.firstChild.textContent.trim())
                .filter(text => /^-?[0-9.]+$/.test(text) && text.includes('.'));
            wrap.scrollLeft = wrap.scrollWidth;
            const first = table.querySelector('tbody td:first-child').getBoundingClientRect();
            return {page: document.documentElement.scrollWidth, window: window.innerWidth, wrap: wrap.clientWidth, table: table.scrollWidth,
                    overflow: getComputedStyle(wrap).overflowX, left: first.left, wrapLeft: wrap.getBoundingClientRect().left, numbers};
        }""")
        assert model["page"] <= model["window"] and model["wrap"] <= model["window"], model
        assert model["table"] <= model["wrap"] or (model["overflow"] == "auto" and abs(model["left"] - model["wrapLeft"]) < 2), model
        assert model["numbers"] and all(len(text.split(".")[1]) <= 3 for text in model["numbers"]), model["numbers"][:20]
        page.screenshot(path=str(ARTIFACTS / "site_model_page.png"), full_page=False)

        # Every plot can be taken away as SVG (the button added to Plotly's toolbar) and PNG (its camera).
        titles = page.evaluate("() => Array.from(document.querySelector('.plot .modebar').querySelectorAll('.modebar-btn')).map(a => a.getAttribute('data-title'))")
        assert "Download plot as SVG" in titles and "Download plot as a PNG" in titles and "Share chart..." not in titles, titles
        browser.close()


def test_internal_consistency_curves_and_auroc_reach_the_site(tmp_path):
    # The committed default suite has no IC task: fabricate one model's IC rows with known values.
    import json

    import numpy as np

    from layerbench.results import ResultStore, complete_rows

    agreement = [dict(metric="calibrated_agreement", layer=l, value=v, stderr=0.05, n=40, higher_is_better=None, subset=s)
                 for s, base in (("correct-paths", 0.6), ("incorrect-paths", 0.3)) for l, v in enumerate(np.linspace(base, 1.0, 5))]
    summary_rows = [dict(metric="ic_auroc", layer=None, value=0.71, stderr=np.nan, n=120, higher_is_better=True, subset="all")]
    rows = complete_rows(pd.DataFrame(agreement + summary_rows), model="org/lm", revision=None, task="consistency-coinflip",
                         subset="all", split="test", n_layers=4, run_id="r")
    ResultStore(tmp_path / "results").write_task(rows, "org/lm", None, "consistency-coinflip", "hash")
    build_site([tmp_path / "results"], tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert "0.71" in index  # the IC AUROC column
    page = (tmp_path / "site" / "models" / "org__lm.html").read_text()
    figures = json.loads(re.search(r'<script type="application/json" id="figures">(.*?)</script>', page, re.S).group(1))
    curves = figures["m-consistency-coinflip-calibrated_agreement"]["data"]
    assert [t["name"] for t in curves] == ["correct-paths", "incorrect-paths"] and curves[0]["y"][0] == pytest.approx(0.6)
    assert curves[1]["x"] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_the_site_is_a_function_of_the_result_folders_alone(tmp_path, monkeypatch, quick_run):
    """Task specs installed where the site is built (another family, another main score for a task) change nothing on it."""
    from layerbench import analysis

    build_site([quick_run[0]], tmp_path / "here")
    other = tmp_path / "other-specs"
    other.mkdir()
    (other / "concept-capitals.yaml").write_text(  # same name, another family and main score: found first
        "name: concept-capitals\nfamily: label-free\ndescription: not the one that ran\n"
        "data: {source: packaged, dataset: bbc-news}\nmain_score: anisotropy\n")
    monkeypatch.setenv("LAYERBENCH_TASKS", str(other))
    assert analysis.main_metric(load_results(quick_run[0]), "concept-capitals") == "anisotropy"  # pandas users read the installed specs
    build_site([quick_run[0]], tmp_path / "elsewhere")
    pages = sorted(p.relative_to(tmp_path / "here") for p in (tmp_path / "here").rglob("*.html"))
    assert pages == sorted(p.relative_to(tmp_path / "elsewhere") for p in (tmp_path / "elsewhere").rglob("*.html"))
    for page in pages:
        assert (tmp_path / "here" / page).read_bytes() == (tmp_path / "elsewhere" / page).read_bytes(), page
    assert "Family probe; main metric accuracy" in (tmp_path / "here" / "tasks" / "concept-capitals.html").read_text()


def _figures(page: Path) -> dict:
    import json

    text = page.read_text()
    start = text.index('<script type="application/json" id="figures">') + len('<script type="application/json" id="figures">')
    return json.loads(text[start:text.index("</script>", start)])


def test_each_task_page_marks_every_models_best_layer_on_relative_depth(site):
    figures = _figures(site / "tasks" / "mteb-bbc-clustering.html")
    traces = next(iter(figures.values()))["data"]
    curves = {t["name"]: t for t in traces if t["mode"] == "lines+markers"}
    stars = [t for t in traces if t["mode"] == "markers"]
    assert len(curves) >= 4 and len(stars) == len(curves)
    for star in stars:
        curve = curves[star["legendgroup"]]
        assert max(x for x in curve["x"]) == pytest.approx(1.0) and min(curve["x"]) == 0  # relative depth: every model spans 0..1
        assert star["y"][0] == max(y for y in curve["y"] if y is not None)  # v-measure: higher is better
        assert star["x"][0] == curve["x"][curve["y"].index(star["y"][0])]


def test_the_layer_selection_page_scores_every_method_and_the_index_shows_each_models_pick(site):
    """The page "Layer selection without labels": the methods' regret with intervals per family, each model's picked
    against its best layers by depth, the picks as CSV; the index shows each model's label-free pick under its layers."""
    from layerbench import selection

    html = (site / "layer-selection.html").read_text()
    assert "Layer selection without labels" in html and 'href="layer-selection.html"' in (site / "metrics.html").read_text()
    figures = _figures(site / "layer-selection.html")
    regret = figures["regret"]["data"]
    assert [t["name"] for t in regret] == ["all", "mteb", "probe"] and all("error_y" in t for t in regret)
    assert {"learned-depth", "li2025", "valeriani2023", "cheng2025", "learned-lomo", "learned-lofo", "last", "oracle"} <= set(regret[0]["x"])
    assert [o["label"] for o in figures["depth"]["selector"]][:2] == ["learned-depth", "learned-lomo"]
    picks = pd.read_csv(site / "data" / "layer-selection.csv")
    last = picks[picks.method == "last"]
    assert (last.picked_layer == last.last_layer).all() and (last.gain == 0).all()
    mine = picks[(picks.method == selection.DEFAULT_METHOD) & (picks.model == "smollm2-135m-q4")]
    layer = int(selection.model_layer(mine).layer.iloc[0])
    row = re.search(r'<a href="models/smollm2-135m-q4.html">smollm2-135m-q4</a>.*?</tr>', (site / "index.html").read_text(), re.S).group(0)
    assert f"pick {layer}</span>" in row


def test_the_tasks_by_depth_heat_map_scales_each_task_between_its_worst_and_best_layer():
    from layerbench.site.figures import depth_heatmap

    rows = pd.DataFrame({"task": ["a"] * 3 + ["b"] * 3 + ["c"] * 3, "layer": [0, 1, 2] * 3, "depth": [0.0, 0.5, 1.0] * 3, "subset": "default",
                         "split": "test", "metric": ["acc"] * 3 + ["loss"] * 3 + ["acc"] * 3, "value": [0.2, 0.6, 1.0, 3.0, 1.0, 2.0, 0.5, 0.5, 0.5],
                         "higher_is_better": [True] * 3 + [False] * 3 + [True] * 3, "source_layer": pd.NA, "model": "m"})
    figure = depth_heatmap(rows, {"a": "acc", "b": "loss", "c": "acc"}, "t", "relative depth")
    heat = figure["data"][0]
    assert heat["y"] == ["a", "b", "c"] and heat["x"] == [0.0, 0.5, 1.0]
    assert np.allclose(heat["z"], [[0.0, 0.5, 1.0], [0.0, 1.0, 0.5], [1.0, 1.0, 1.0]])  # b: lower is better, so its lowest loss is 1
    assert heat["customdata"][1] == [3.0, 1.0, 2.0]  # the hover shows the raw score


def test_the_metrics_verdict_says_so_when_no_metric_beats_the_last_layer():
    from layerbench.site.metrics_page import verdict
    from layerbench.site.view import presentation

    def _verdict(summary_rows):
        return verdict(summary_rows, presentation()["pages"]["metrics"]["verdict"])

    row = dict(direction="higher is better", pairs=8, ceiling=0.05, beats_last="1/8")
    losing = [dict(row, metric="lidar", picked_gain=-0.02, per_model={"m1": -0.03, "m2": 0.01}), dict(row, metric="dime", picked_gain=-0.05, per_model={})]
    text = _verdict(losing)
    assert text.startswith("No label-free metric beats the last layer") and "closest is lidar (-0.020)" in text
    assert "lidar on m2 (+0.010)" in text and "+0.050" in text
    winning = _verdict([dict(losing[0], picked_gain=0.01), losing[1]])
    assert winning.startswith("Over these 8 (model, task) pairs, 1 of 2") and "lidar (+0.010, better than the last layer on 1/8)" in winning


def test_a_gain_that_rounds_to_zero_never_beats_the_last_layer():
    from layerbench.site.metrics_page import verdict
    from layerbench.site.view import presentation

    row = dict(direction="higher is better", pairs=8, ceiling=0.05, beats_last="0/8")
    text = verdict([dict(row, metric="lidar", picked_gain=0.0003, per_model={"m1": 0.0004, "m2": 0.002})], presentation()["pages"]["metrics"]["verdict"])
    assert text.startswith("No label-free metric beats the last layer") and "+0.000" not in text and "lidar on m2 (+0.002)" in text


def test_metrics_that_order_layers_alike_are_one_picker():
    """effective_rank = exp(H) and H / log min(N, D) rank every layer as dataset_entropy does: one group, the source first;
    a metric that differs on one pair is not in it."""
    from layerbench.analysis import equivalent_metrics

    def picks(spearman, picked):
        return pd.DataFrame({"model": ["a", "a", "b"], "task": ["t1", "t2", "t1"], "spearman": spearman, "picked_layer": picked, "direction": None})

    same = picks([0.3, -0.2, 0.9], [4, 4, 6])
    groups = equivalent_metrics({"effective_rank": same, "dataset_entropy": same.copy(), "dataset_entropy_normalized": same.copy(),
                                 "anisotropy": picks([0.3, -0.2, 0.8], [4, 4, 6]), "mean_norm": picks([0.1, 0.2, 0.3], [4, 4, 6])})
    assert groups == [["dataset_entropy", "dataset_entropy_normalized", "effective_rank"]]


def test_tables_list_long_notes_under_them_and_drop_empty_columns():
    from layerbench.site.view import table

    declared = [{"id": "task", "title": "task", "text": True}, {"id": "best", "title": "best"}, {"id": "ic_auroc", "title": "IC AUROC"},
                {"id": "note", "title": "note", "text": True, "footnote": True}]
    rows = [{"task": "a", "best": 0.5, "ic_auroc": None, "note": "not decodable beyond the baseline"}, {"task": "b", "best": 0.7, "ic_auroc": None, "note": None},
            {"task": "c", "best": None, "ic_auroc": None, "note": "not decodable beyond the baseline"}]
    made = table("tasks", declared, rows)
    assert [c["id"] for c in made["columns"]] == ["task", "best"]  # no IC AUROC anywhere; the note is listed, not a column
    assert made["notes"] == [(1, "not decodable beyond the baseline", ["a", "c"])]
    assert [r.get("_note") for r in made["rows"]] == [1, None, 1]


def test_the_index_says_which_runs_were_still_in_progress_and_model_pages_show_a_failed_runs_error(tmp_path):
    from layerbench.results import Manifest, ResultStore, complete_rows
    from layerbench.results.manifest import ModelRecord, TaskRecord, VariantRecord

    store = ResultStore(tmp_path / "results")
    rows = complete_rows(pd.DataFrame([dict(metric="accuracy", layer=l, value=v, stderr=0.01, n=50, higher_is_better=True) for l, v in enumerate([0.5, 0.7, 0.6])]),
                         model="org/m", revision=None, task="concept-capitals", subset="factual", split="cv5", n_layers=2, run_id="r1")
    store.write_task(rows, "org/m", None, "concept-capitals", "hash")
    record = {"concept-capitals": TaskRecord(family="probe", main_score="accuracy", n=50, variants={"default": VariantRecord()})}
    store.write_manifest(Manifest(run_id="r1", status="failed", error="task 'x': its data set is empty", error_task="x", written_at="2026-12-01T10:00:00+00:00",
                                  model=ModelRecord(name="org/m"), tasks=record))
    out = tmp_path / "site"
    build_site([tmp_path / "results"], out)
    assert 'id="in-progress"' not in (out / "index.html").read_text()
    page = (out / "models" / "org__m.html").read_text()
    assert "failed: task &#39;x&#39;: its data set is empty (task x)" in page and 'href="org__m/runs/r1.json"' in page
    assert (out / "models" / "org__m" / "runs" / "r1.json").is_file()

    store.write_manifest(Manifest(run_id="r2", status="running", written_at="2026-12-02T08:00:00+00:00", model=ModelRecord(name="org/m"), tasks=record))
    build_site([tmp_path / "results"], out)
    notice = re.search(r'<p class="verdict" id="in-progress">(.*?)</p>', (out / "index.html").read_text(), re.S).group(1)
    assert notice.startswith("1 run(s) in these results were still in progress") and "run r2, last written 2026-12-02 08:00 UTC" in notice


def test_the_index_ranks_only_models_run_on_the_same_tasks_at_the_same_size(tmp_path):
    """A copy of MiniLM run on 2 probe tasks (of 18: 9 under each protocol), one at 64 items, is listed apart with why; every headline cell says its n
    and its interval, and a fix rate on fewer than 20 wrong queries is withheld."""
    from layerbench.results import ResultStore

    rows = load_results(RESULTS)
    minilm = rows[rows.model == "sentence-transformers/all-MiniLM-L6-v2"]
    copy = tmp_path / "copy"
    for task in ("concept-capitals", "concept-borders"):
        part = minilm[(minilm.task == task) & (minilm.protocol == "layerbench")].assign(model="local/minilm-copy")
        if task == "concept-borders":
            part = part.assign(n=64)
        ResultStore(copy).write_task(part, "local/minilm-copy", None, task, "hash")
    out = tmp_path / "site"
    build_site([RESULTS, copy], out)
    index = (out / "index.html").read_text()
    ranked, apart = index.split('id="apart"')
    assert "local/minilm-copy" not in ranked and "local/minilm-copy" in apart
    assert re.search(r"probe: 2 of 18 tasks; items concept-borders 64 of 318", apart)
    for model in ("sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4", "gemma3-270m-base-q4", "multilingual-e5-small-q4"):
        assert model in ranked
    assert '<span class="n">9 tasks</span>' in ranked  # the probe means say what they average
    # Both decoders' fix rates rest on 20 wrong queries or more: each cell shows the rate, its interval and its n.
    from layerbench.analysis import summary
    from layerbench.site.index import IndexCell, index_cell

    decoders = rows[rows.model.isin(["smollm2-135m-q4", "gemma3-270m-base-q4"])]
    for fix in summary(decoders).query("task == 'backpatch-two-hop' and protocol == 'layerbench'").itertuples():
        assert fix.oracle_fix_rate_n >= 20 and fix.oracle_fix_rate_low < fix.oracle_fix_rate < fix.oracle_fix_rate_high
        assert f'{fix.oracle_fix_rate:.3f} <span class="ci" title="95% interval">{fix.oracle_fix_rate_low:.3f}–{fix.oracle_fix_rate_high:.3f}</span> ' \
               f'<span class="n">n={int(fix.oracle_fix_rate_n)}</span>' in ranked
    # On fewer than 20 it is withheld as a headline, with a note on the model page, and the index cell says on how few.
    few = decoders[(decoders.model == "smollm2-135m-q4") & (decoders.task == "backpatch-two-hop") & (decoders.protocol == "layerbench")]
    few = few.assign(n=few.n.where(few.metric != "oracle_fix_rate", 9))
    fix = summary(few).iloc[0]
    assert np.isnan(fix.oracle_fix_rate) and fix.oracle_fix_rate_n == 9 and "fewer than the 20 a headline needs" in fix.note
    assert index_cell(summary(few), "oracle_fix_rate", "mean") == IndexCell("withheld", n="n=9 < 20")


def test_two_revisions_of_one_model_are_two_rows_two_pages_and_two_curves(tmp_path):
    """Everything on the site is keyed by (model, revision): layer counts, task sizes from each revision's own manifest, pages, curves."""
    import json

    import numpy as np

    from layerbench.results import Manifest, ResultStore, complete_rows
    from layerbench.results.manifest import ModelRecord, TaskRecord, VariantRecord

    store = ResultStore(tmp_path / "results")
    for revision, n_layers, n, parameters in (("a", 3, 100, 1000), ("b", 5, 64, 2000)):
        accuracy = np.linspace(0.5, 0.9, n_layers + 1)
        rows = complete_rows(pd.DataFrame([dict(metric="accuracy", layer=l, value=v, stderr=0.01, n=n, higher_is_better=True) for l, v in enumerate(accuracy)]),
                             model="org/m", revision=revision, task="concept-capitals", subset="factual", split="cv5", n_layers=n_layers, run_id=f"run-{revision}")
        store.write_task(rows, "org/m", revision, "concept-capitals", "hash")
        store.write_manifest(Manifest(run_id=f"run-{revision}", status="complete", model=ModelRecord(name="org/m", revision=revision, parameters=parameters),
                                      tasks={"concept-capitals": TaskRecord(family="probe", main_score="accuracy", n=n, variants={"default": VariantRecord()})}))
    build_site([tmp_path / "results"], tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    ranked, apart = index.split('id="apart"')
    # Two rows: the revision at 100 items is ranked; the one at 64 is listed apart, with its own size in the reason.
    assert "models/org__m@a.html" in ranked and "models/org__m@b.html" in apart and "concept-capitals 64 of 100" in apart
    page_a = (tmp_path / "site" / "models" / "org__m@a.html").read_text()
    page_b = (tmp_path / "site" / "models" / "org__m@b.html").read_text()
    assert "1000 parameters, 3 layers, revision a" in page_a and "2000 parameters, 5 layers, revision b" in page_b
    assert "run-a" in page_a and "run-b" not in page_a and "run-b" in page_b  # each page its own runs
    task = (tmp_path / "site" / "tasks" / "concept-capitals.html").read_text()
    figures = json.loads(re.search(r'<script type="application/json" id="figures">(.*?)</script>', task, re.S).group(1))
    names = [t["name"] for t in figures["t-accuracy"]["data"] if t.get("mode") == "lines+markers"]
    assert names == ["org/m@a (factual)", "org/m@b (factual)"]


def test_an_index_cell_says_on_how_many_of_the_tasks_that_ran_its_mean_rests():
    """A headline mean leaves out a task with no value (no layer decides, no concept beyond the baseline) and says so; a cell
    is typed: a value, withheld, none (the tasks ran, none has one) or not run."""
    from layerbench.site.index import IndexCell, index_cell

    part = pd.DataFrame({"decision_depth": [1.0, 1.0, np.nan], "decision_depth_n": [158, 404, 404],
                         "decision_depth_low": [1.0, 1.0, np.nan], "decision_depth_high": [1.0, 1.0, np.nan]})
    assert index_cell(part, "decision_depth", "mean") == IndexCell("value", 1.0, "n=562, 2 of 3 tasks", (1.0, 1.0))
    assert index_cell(part.iloc[:2], "decision_depth", "mean").n == "n=562"
    none = index_cell(part.iloc[2:], "decision_depth", "mean")  # it ran, and no layer decides: the cell says "none"
    assert none == IndexCell("none", n="0 of 1 task") and none.shown == "none"
    not_run = index_cell(part.iloc[2:].assign(decision_depth_n=np.nan), "decision_depth", "mean")
    assert not_run == IndexCell("not run") and not_run.shown is None


def test_a_model_whose_run_stopped_before_a_task_is_listed_apart_with_the_task():
    """A decoder stopped before back-patching has no back-patching rows, as an encoder has none: its manifests say which
    tasks the stopped run meant to run and no run recorded, and the index lists it apart with them."""
    from types import SimpleNamespace

    from layerbench.results.manifest import Manifest
    from layerbench.site.index import unfinished_reason

    def manifest(run_id: str, status: str, planned: list[str], recorded: list[str]) -> Manifest:
        return Manifest.model_validate({"run_id": run_id, "status": status, "model": {"name": "m"}, "config": {"tasks": planned},
                                        "tasks": {t: {"family": "probe"} for t in recorded}})

    stopped = manifest("r2", "interrupted", ["concept-capitals", "backpatch-two-hop", "similarity-layers"], ["concept-capitals"])
    later = manifest("r3", "complete", ["similarity-layers"], ["similarity-layers"])
    data = SimpleNamespace(manifests={"m": [stopped, later]})
    assert unfinished_reason(data, "m", None) == "unfinished: a run stopped before backpatch-two-hop"
    finished = manifest("r4", "complete", ["backpatch-two-hop"], ["backpatch-two-hop"])
    assert unfinished_reason(SimpleNamespace(manifests={"m": [stopped, later, finished]}), "m", None) is None
