"""Find, parse and validate task and suite specs.

Specs are looked up in every folder of ``$LAYERBENCH_TASKS`` (separated by
``os.pathsep``) and then in the ``tasks/`` folder of the layerbench checkout;
suites in the ``suites/`` subfolder of each. The first spec with a name wins.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from layerbench.errors import UserError
from layerbench.specs.schema import SuiteSpec, TaskSpec

BUILTIN_TASKS = Path(__file__).resolve().parents[2] / "tasks"


def task_dirs() -> list[Path]:
    """Folders searched for task specs, in order."""
    extra = [Path(p).expanduser() for p in os.environ.get("LAYERBENCH_TASKS", "").split(os.pathsep) if p]
    return [d for d in [*extra, BUILTIN_TASKS] if d.is_dir()]


def _parse(path: Path, model: type[BaseModel]) -> BaseModel:
    """``path`` validated as ``model``; any problem is one line naming file, field and expectation."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of fields, got {type(raw).__name__}")
    try:
        return model(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise UserError(f"{path}: field '{where}': {err['msg']}") from None


def load_task_file(path: str | Path) -> TaskSpec:
    """Parse one task spec file; a relative local data path is made relative to the file."""
    path = Path(path)
    spec = _parse(path, TaskSpec)
    assert isinstance(spec, TaskSpec)
    if spec.data.source == "local" and not Path(spec.data.path).expanduser().is_absolute():
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"path": str(path.parent / spec.data.path)})})
    return spec


def all_tasks() -> dict[str, TaskSpec]:
    """Every task spec found, by name (earlier folders win)."""
    found: dict[str, TaskSpec] = {}
    for folder in task_dirs():
        for path in sorted(folder.glob("*.yaml")):
            spec = load_task_file(path)
            found.setdefault(spec.name, spec)
    return found


def all_suites() -> dict[str, SuiteSpec]:
    """Every suite spec found, by name."""
    found: dict[str, SuiteSpec] = {}
    for folder in task_dirs():
        for path in sorted((folder / "suites").glob("*.yaml")):
            suite = _parse(path, SuiteSpec)
            assert isinstance(suite, SuiteSpec)
            found.setdefault(suite.name, suite)
    return found


def get_task(name: str) -> TaskSpec:
    tasks = all_tasks()
    if name not in tasks:
        raise UserError(f"unknown task '{name}'; see `layerbench list tasks` (known: {', '.join(sorted(tasks))})")
    return tasks[name]


def get_suite(name: str) -> SuiteSpec:
    suites = all_suites()
    if name not in suites:
        raise UserError(f"unknown suite '{name}'; known: {', '.join(sorted(suites))}")
    return suites[name]
