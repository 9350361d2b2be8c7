"""Rules of the code's shape that an issue asked for, kept true by a test so that a later change cannot undo them unseen.

- A paper's protocol is named only by the modules of its family (its record, its evaluator, its data files: a module
  named after the family, in any package), in any spelling: ``jin2024``, ``JIN-2024``, ``jin_2024_strategyqa``; the
  site's schema and templates name none.
- A family's headlines are declared once, in its record: the schema names none of their columns.
- No evaluator compares a protocol's name: a protocol is its settings (``layerbench.families.registry.ProtocolSettings``).
- Every module of the static site is at most 300 lines.
- ``make lint`` covers every tracked Python folder.
- The runner's ``execute`` is under 40 lines: a dispatch to the steps in ``layerbench/execution``.
- ``capture_layers`` takes a request object.
"""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from layerbench.families import OURS, all_families

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "layerbench"
SITE_MODULE_LINES = 300


def _spelling(name: str) -> re.Pattern[str]:
    """``name`` in any spelling: any case, with or without a separator between its letters and its digits; not inside a longer word."""
    parts = re.findall(r"[a-z]+|\d+", name.lower())
    return re.compile(r"(?<![a-z0-9])" + r"[-_ ]?".join(map(re.escape, parts)) + r"(?![a-z]*\d)", re.IGNORECASE)


def _of_family(path: Path, family: str) -> bool:
    """A module of ``family``: its stem is the family's name as a module (``latent_language``) or begins with it and ``_``."""
    stem, own = path.stem, family.replace("-", "_")
    return stem == own or stem.startswith(own + "_")


def test_a_protocol_is_named_only_by_the_modules_of_its_family():
    found = []
    for family in all_families().values():
        for protocol in family.protocols:
            pattern = _spelling(protocol.name)
            for path in [*sorted(PACKAGE.rglob("*.py")), *sorted((ROOT / "leaderboard").rglob("*.*"))]:
                if _of_family(path, family.name) or path.suffix not in (".py", ".yaml", ".html", ".js", ".css"):
                    continue
                for number, line in enumerate(path.read_text().splitlines(), 1):
                    if pattern.search(line):
                        found.append(f"{path.relative_to(ROOT)}:{number}: {protocol.name} ({family.name}'s)")
    assert found == []


def test_the_spelling_rule_catches_every_spelling_and_only_those():
    pattern = _spelling("jin2024")
    for text in ("jin2024", "JIN-2024", "jin_2024_strategyqa", '"jin2024-strategyqa"', "Jin 2024", "evaluate_jin2024"):
        assert pattern.search(text), text
    for text in ("jin20245", "benjamin2024"):
        assert not pattern.search(text), text


def test_no_evaluator_compares_a_protocol_name():
    """In ``layerbench/evaluators``, no comparison reads a ``protocol`` attribute or a protocol's name, and no code reads
    ``.protocol`` at all: what a protocol changes comes from its settings."""
    names = {OURS.name} | {p.name for family in all_families().values() for p in family.protocols}
    found = []
    for path in sorted((PACKAGE / "evaluators").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "protocol":
                found.append(f"{path.name}:{node.lineno}: reads .protocol")
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(isinstance(o, ast.Constant) and o.value in names for o in operands):
                    found.append(f"{path.name}:{node.lineno}: compares a protocol's name")
    assert found == []


def test_every_site_module_is_at_most_300_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in (PACKAGE / "site").glob("*.py")}
    assert sizes and {name: n for name, n in sizes.items() if n > SITE_MODULE_LINES} == {}


def test_make_lint_covers_every_tracked_python_folder():
    """ruff in ``make lint`` checks every top-level folder that holds a tracked Python file (and RUF100 flags an unused noqa)."""
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    folders = {Path(f).parts[0] for f in tracked if len(Path(f).parts) > 1}
    makefile = (ROOT / "Makefile").read_text()
    ruff = next(line for line in makefile.splitlines() if "ruff check" in line)
    assert folders and folders <= set(ruff.split()), f"make lint's ruff misses {sorted(folders - set(ruff.split()))}"
    assert "RUF100" in (ROOT / "pyproject.toml").read_text()


def test_the_runners_execute_is_a_dispatch_under_40_lines():
    """``ModelRunner.execute`` plans the capture, runs it, and hands each variant to the executor of what its family reads
    (``layerbench/execution``); the steps live there, not in one long function."""
    tree = ast.parse((PACKAGE / "runner.py").read_text())
    runner = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelRunner")
    execute = next(n for n in runner.body if isinstance(n, ast.FunctionDef) and n.name == "execute")
    assert execute.end_lineno is not None and execute.end_lineno - execute.lineno + 1 < 40


def test_capture_layers_takes_a_request_object():
    """``capture_layers(handle, request, stats)``: what to capture is one :class:`~layerbench.capture.CaptureRequest`."""
    import inspect

    from layerbench.capture import CaptureRequest, capture_layers

    assert list(inspect.signature(capture_layers).parameters) == ["handle", "request", "stats"]
    assert "texts" in {f.name for f in __import__("dataclasses").fields(CaptureRequest)}


def test_a_headline_is_declared_once_in_its_family_and_the_schema_only_places_it():
    """The index, the summary tables and the README read each headline (column, title, statistic, prose) from the registry;
    ``leaderboard/schema.yaml`` says where a family's headlines go (its group), never which they are."""
    import yaml

    from layerbench.families import all_headlines

    schema = yaml.safe_load((ROOT / "leaderboard" / "schema.yaml").read_text())
    named = {c.get("id") for c in schema["index_columns"] + schema["summary_columns"]} | {c.get("field") for c in schema["index_columns"]}
    headlines = {h.column for h in all_headlines()}
    assert headlines and headlines.isdisjoint(named)

