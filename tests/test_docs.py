"""The README and the documentation (docs/) say what the code does: the task tables match `layerbench list tasks`, the
snippets run, the README's links resolve and it stays short, and a slice of the committed results/ comes back when rerun:
within the measured cross-platform tolerance on any x86-64 machine, bit for bit on the platform that made it."""
from __future__ import annotations

import contextlib
import functools
import io
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import platform_tolerance, same_platform

from layerbench.cli import main

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
# The README, then every documentation page: where the text lives that the tests below check (each fact in one place).
DOCS = "\n".join([README, *(page.read_text() for page in sorted((ROOT / "docs").rglob("*.md")))])


@functools.lru_cache(maxsize=1)
def _committed_site():
    """The site's reading of results/ (rows, manifests, summary), read once for the tests that check the README against it."""
    from layerbench.site import view

    return view.read_site([ROOT / "results"])


def _listed_tasks() -> dict[str, str]:
    """`layerbench list tasks` as task -> size column."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["list", "tasks"]) == 0
    sizes = {}
    for line in out.getvalue().splitlines()[1:]:
        if not line.strip() or line.startswith("suite "):
            continue
        name, _family, size, *_ = line.split()
        sizes[name] = size
    return sizes


def _readme_task_rows() -> dict[str, str]:
    """The first table row of each task in the README and docs (its row in a task table; later tables report results), as task -> its last cell (the size)."""
    rows = {}
    for line in DOCS.splitlines():
        match = re.match(r"\| `([a-z0-9][a-z0-9_.-]*)` \|.*\| ([^|]+) \|$", line)
        if match:
            rows.setdefault(match.group(1), match.group(2).strip())
    return rows


def test_the_readme_task_tables_match_layerbench_list_tasks():
    listed, documented = _listed_tasks(), _readme_task_rows()
    tasks = {name: size for name, size in documented.items() if name in listed}
    # Every offline probe and mteb task has its row, and every row's size is the listing's (commas and units aside).
    assert {name for name in listed if name.startswith(("concept-", "mteb-")) and listed[name] != "network"} <= set(tasks)
    for name, size in tasks.items():
        number = re.match(r"[\d,]+", size)
        assert number and number.group(0).replace(",", "") == listed[name], f"README says {name} has {size}; `layerbench list tasks` says {listed[name]}"


def test_the_readme_names_the_cache_variables_as_the_code_reads_them():
    from layerbench import config

    source = Path(config.__file__).read_text()
    assert "LAYERBENCH_ACTIVATION_CACHE" in source and "`$LAYERBENCH_ACTIVATION_CACHE`, default `$LAYERBENCH_CACHE/activations`" in DOCS


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS, flags=re.S)


@pytest.mark.slow
def test_the_readme_python_snippets_run():
    """Every python block runs as written from the repository root, each in its own interpreter (the family example
    registers a family, which must not leak into other tests)."""
    import os
    import subprocess
    import sys

    blocks = _python_blocks()
    assert len(blocks) >= 3
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    outputs = []
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block + "\nprint('snippet ran')"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.rstrip().endswith("snippet ran"), f"README snippet failed:\n{block}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    out = "".join(outputs)
    assert not re.search(r"(?<![\w.])-0\.", out), out  # no negative zero entropies (a model name such as coder-0.5b is no number)
    assert "sentence-transformers/all-MiniLM-L6-v2 best at depth" in out and "nan" not in out.lower()


@pytest.mark.slow
def test_a_slice_of_the_committed_results_reruns_within_the_platform_tolerance(tmp_path):
    """MiniLM's concept-capitals and mteb-lee-sts, as `make leaderboard` ran them (the default suite's 16 metric samples),
    rerun with an empty cache: every row within the cross-platform tolerance of results/, and bit for bit where this
    machine has the platform fingerprint the committed manifests record."""
    from layerbench import api
    from layerbench.results import load_results

    model, tasks = "sentence-transformers/all-MiniLM-L6-v2", ["concept-capitals", "mteb-lee-sts"]
    api.run([model], tasks=tasks, protocols=["layerbench"], metric_samples=16, output=str(tmp_path / "out"), cache=False)
    fresh = load_results(tmp_path / "out")
    committed = load_results(ROOT / "results")
    committed = committed[(committed.model == model) & committed.task.isin(tasks) & (committed.protocol == "layerbench")]
    keys = ["task", "protocol", "site", "subset", "split", "metric", "layer", "source_layer"]
    both = committed.merge(fresh, on=keys, suffixes=("_committed", "_fresh"))
    assert len(both) == len(committed) == len(fresh) and len(both) > 100
    difference = (both.value_committed - both.value_fresh).abs()
    same_nan = both.value_committed.isna() & both.value_fresh.isna()
    allowed = platform_tolerance(both.rename(columns={"value_committed": "value", "n_layers_committed": "n_layers"}))
    outside = ~same_nan & ~(difference <= allowed)
    worst = both.assign(difference=difference, allowed=allowed)[outside]
    assert not outside.any(), worst[[*keys, "value_committed", "value_fresh", "allowed"]].to_string()
    assert np.array_equal(both.value_committed.isna(), both.value_fresh.isna())
    if same_platform(ROOT / "results" / "sentence-transformers__all-MiniLM-L6-v2"):
        assert (difference[~same_nan] == 0).all()  # the platform that made them: the same bits


def test_the_readme_leaderboard_table_is_what_the_committed_results_give():
    """The README's table is written from results/ (make site), never typed: it equals what they give now, and its
    probe column equals layerbench.summary's mean over the probe tasks, computed here apart from the site code."""
    import layerbench
    from layerbench.site import readme

    data = _committed_site()
    assert readme.updated_readme(README, readme.markdown_table(data)) == README, "README's leaderboard table is stale: run make site"
    table = layerbench.summary(layerbench.load_results(ROOT / "results"))
    probe = table[(table.protocol == "layerbench") & table.task.str.startswith("concept-") & table.honest_best_value.notna()]
    block = README[README.index(readme.START):README.index(readme.END)]
    from layerbench.site.index import index_rows

    apart = {row["model"] for row in index_rows(data) if row["apart"]}  # listed apart on the site, not in the README's table
    for model, best in probe.groupby("model").honest_best_value.mean().items():  # the selection-honest best (layerbench.honest_best)
        line = next((line for line in block.splitlines() if line.startswith(f"| {model.split('/')[-1]} (")), None)
        assert (line is None) == (model in apart), (model, apart)
        assert line is None or line.split(" | ")[1].startswith(f"{best:.3f} ("), (model, best, line)


def test_the_readme_layer_selection_table_is_what_the_committed_results_give():
    """The README's layer-selection table is written from results/ too; its last-layer row equals the mean regret of the
    last layer computed here from layerbench.summary alone (the honest best, else the naive one, minus the last score)."""
    import layerbench
    from layerbench.site import readme

    data = _committed_site()
    assert readme.updated_blocks(README, data) == README, "README's tables are stale: run make site"
    table = layerbench.summary(layerbench.load_results(ROOT / "results"))
    scored = table[(table.protocol == "layerbench") & (table.task.str.startswith("concept-") | table.task.str.startswith("mteb-"))
                   & table.last_value.notna()]
    oracle = scored.honest_best_value.fillna(scored.best_value)
    block = README[README.index(readme.SELECTION_START):README.index(readme.SELECTION_END)]
    last = next(line for line in block.splitlines() if line.startswith("| last |"))
    assert last.split(" | ")[1].startswith(f"{(oracle - scored.last_value).mean():+.3f} ("), (last, len(scored))
    assert f"{len(scored)} (model, task) curves" in block


def test_the_readme_table_shows_the_headline_cells_the_site_index_shows(tmp_path):
    """Each headline column of the README's table is the site index's column of that title, cell for cell: the same value,
    interval and n (or "withheld"/"none"), read from the built index.html apart from the code that writes the README."""
    from html.parser import HTMLParser

    from layerbench.site import build_site, readme

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.table, self.rows, self.header, self.cell = None, [], [], None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.table = dict(attrs).get("id")
            elif self.table == "models" and tag in ("td", "th") and "group" not in (dict(attrs).get("class") or ""):
                self.cell = ""
            elif self.table == "models" and tag == "tr":
                self.rows.append([])

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append(" ".join(self.cell.split()))
                self.cell = None
            elif tag == "table":
                self.table = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    build_site([ROOT / "results"], tmp_path / "site")
    parser = Cells()
    parser.feed((tmp_path / "site" / "index.html").read_text())
    header, *rows = [r for r in parser.rows if r]
    block = README[README.index(readme.START):README.index(readme.END)].splitlines()
    titles = [c.strip() for c in block[1].strip("|").split("|")]
    compared = 0
    for line in block[3:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        model = cells[0].split(" (")[0]
        index_row = next(r for r in rows if r[0].split("/")[-1] == model)
        for title in ("concept depth", "fix rate", "IC AUROC", "decision depth", "English detour"):
            shown = index_row[header.index(title)]
            words = re.sub(r"[(),:]", " ", cells[titles.index(title)]).split()
            assert words == (["—"] if shown in ("", "—") else re.sub(r"[(),:]", " ", shown).split()), (model, title)
            compared += 1
    assert compared >= 20


def test_every_committed_manifest_names_the_lock_and_one_platform():
    """results/ is one build (make rebuild): every run manifest records the lock as committed, used in full, and the
    same platform fingerprint; the site's model pages show both."""
    from layerbench.fingerprint import file_sha256
    from layerbench.results import read_manifests

    manifests = [m for runs in read_manifests([ROOT / "results"]).values() for m in runs]
    assert len(manifests) >= 4
    assert {m.platform_id for m in manifests} != {None} and len({m.platform_id for m in manifests}) == 1
    lock = file_sha256(ROOT / "requirements" / "lock.txt")[:12]
    for m in manifests:
        assert m.environment.lock and m.environment.lock["used"] and m.environment.lock["sha256"] == lock, m.run_id


def test_make_demo_builds_its_site_and_ends_with_the_next_commands():
    """`make demo` ends where a user looks next: the site of its results, the gate against the committed ones, pandas."""
    import subprocess

    planned = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "layerbench leaderboard demo-results -o demo-site" in planned
    for step in ("open demo-site/index.html", "layerbench compare results demo-results", "layerbench.load_results('demo-results')"):
        assert step in planned, step


def test_the_readme_is_a_front_door_whose_links_resolve():
    """At most 250 lines, and every link it holds leads somewhere: a file of the repository, and where it names an anchor,
    a heading (or an ``<a id>``) of that page, slugged as the documentation site slugs it."""
    from markdown.extensions.toc import slugify

    assert len(README.splitlines()) <= 250, len(README.splitlines())
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    assert len(links) >= 15
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        assert target.exists(), f"README links to {link}: no such file"
        if anchor:
            text = target.read_text()
            anchors = {slugify(h.replace("`", ""), "-") for h in re.findall(r"^#{1,6} (.*)$", text, flags=re.M)} | set(re.findall(r'<a id="([^"]+)"', text))
            assert anchor in anchors, f"README links to {link}: no such heading"


def test_the_readme_findings_are_what_the_committed_results_give():
    """Each number of the README's paragraph under the table, computed here from results/ (layerbench.summary)."""
    import layerbench

    table = layerbench.summary(layerbench.load_results(ROOT / "results"))
    ours = table[(table.protocol == "layerbench") & table.honest_best_value.notna()]
    original = ["gemma3-270m-base-q4", "multilingual-e5-small-q4", "sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4"]
    probe = ours[ours.task.str.startswith("concept-")]
    curse = (probe.best_value - probe.honest_best_value).groupby(probe.model).mean()
    assert f"by {curse[original].mean():.3f} on average on the probe tasks of the\nfour original models (SmolLM2 {curse['smollm2-135m-q4']:.3f})" in README
    from layerbench.site.index import index_rows

    apart = {row["model"] for row in index_rows(_committed_site()) if row["apart"]}
    ranked = ~ours.model.isin(apart)  # the README table's models
    beats = (probe[ranked].honest_gain_low > 0).groupby(probe[ranked].model).sum()
    naive = (probe[ranked].gain > 0.0005).groupby(probe[ranked].model).sum()
    assert f"on {beats.min()} to {beats.max()} of\nthe 9 probe tasks per model (naively on {naive.min()} or {naive.max()})" in README
    mteb = ours[ours.task.str.startswith("mteb-")]
    depth = mteb.groupby("model").honest_best_depth.mean()
    assert f"EmbeddingGemma at depth {depth['google/embeddinggemma-300m']:.2f} against its base family's Gemma 3 at {depth['gemma3-270m-base-q4']:.2f}" in README
    retrieval = mteb[(mteb.model == "smollm2-135m-q4") & (mteb.task == "mteb-bbc-retrieval")].iloc[0]
    assert f"retrieval +{retrieval.honest_gain:.3f}, 95% interval {retrieval.honest_gain_low:.3f} to {retrieval.honest_gain_high:.3f}" in README
