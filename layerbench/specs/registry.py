"""Find, parse and validate task and suite specs.

Specs are looked up in every folder of ``$LAYERBENCH_TASKS`` (separated by
``os.pathsep``) and then in the project's ``tasks/`` (shipped inside the wheel);
suites in the ``suites/`` subfolder of each. The first spec with a name wins.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from layerbench.config import shipped_folder
from layerbench.errors import UserError
from layerbench.families import get_family
from layerbench.specs.schema import SuiteSpec, TaskSpec

BUILTIN_TASKS = shipped_folder("tasks")  # the repository's tasks/, shipped inside the wheel


def task_dirs() -> list[Path]:
    """Folders searched for task specs, in order."""
    extra = [Path(p).expanduser() for p in os.environ.get("LAYERBENCH_TASKS", "").split(os.pathsep) if p]
    return [d for d in [*extra, BUILTIN_TASKS] if d.is_dir()]


def _field_error(path: Path, exc: ValidationError, prefix: str = "") -> UserError:
    """The first problem of ``exc`` as one line: file, dotted field, what is expected."""
    err = exc.errors()[0]
    where = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"]]) or "(top level)"
    return UserError(f"{path}: field '{where}': {str(err['msg']).removeprefix('Value error, ')}")


def _parse(path: Path, model: type[BaseModel]) -> BaseModel:
    """``path`` validated as ``model``; any problem is one line naming file, field and expectation."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of fields, got {type(raw).__name__}")
    try:
        return model(**raw)
    except ValidationError as exc:
        raise _field_error(path, exc) from None


def load_task_file(path: str | Path) -> TaskSpec:
    """Parse one task spec file; a relative local data path is made relative to the file."""
    path = Path(path)
    spec = _parse(path, TaskSpec)
    assert isinstance(spec, TaskSpec)
    family = get_family(spec.family)
    try:
        family.settings(**spec.evaluator)
    except ValidationError as exc:
        raise _field_error(path, exc, "evaluator") from None
    if family.sources is not None and spec.data.source not in family.sources:
        raise UserError(f"{path}: field 'data.source': {family.name} tasks read source {' or '.join(family.sources)}, not '{spec.data.source}'")
    if spec.data.source == "mteb" and spec.prompt != "{text}":
        raise UserError(f"{path}: field 'prompt': mteb tasks take no template (mteb builds their texts); remove it")
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
            suite = load_suite_file(path)
            found.setdefault(suite.name, suite)
    return found


def load_suite_file(path: str | Path) -> SuiteSpec:
    """Parse one suite spec file."""
    suite = _parse(Path(path), SuiteSpec)
    assert isinstance(suite, SuiteSpec)
    return suite


def validate_path(path: str | Path) -> list[tuple[Path, str]]:
    """Check every spec at ``path`` (a task or suite file, or a folder of them and its ``suites/``).

    Returns:
        ``(file, problem)`` pairs, one per bad file (empty: all good). A
        suite naming a task that neither ``path`` nor the registry holds is a problem.

    Raises:
        UserError: ``path`` does not exist or holds no ``.yaml`` file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"'{path}' does not exist; give a task spec (.yaml) or a folder of them")
    if path.is_file():
        files = [path]
    else:
        files = sorted(path.glob("*.yaml")) + sorted((path / "suites").glob("*.yaml"))
    if not files:
        raise UserError(f"no .yaml specs in '{path}'")
    problems: list[tuple[Path, str]] = []
    tasks: dict[str, TaskSpec] = {}
    suites: list[tuple[Path, SuiteSpec]] = []
    for file in files:
        try:
            if file.parent.name == "suites":
                suites.append((file, load_suite_file(file)))
            else:
                spec = load_task_file(file)
                tasks[spec.name] = spec
        except UserError as exc:
            problems.append((file, str(exc)))
    known = set(tasks) | set(all_tasks()) if suites else set()
    for file, suite in suites:
        unknown = [name for name in suite.tasks if name not in known and not name.startswith("mteb:")]
        if unknown:
            problems.append((file, f"{file}: field 'tasks': unknown task(s) {', '.join(unknown)}"))
    return problems


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
