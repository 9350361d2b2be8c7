"""Find, parse and validate task and suite specs.

Specs are looked up in every folder of ``$LAYERBENCH_TASKS`` (separated by
``os.pathsep``) and then in the project's ``tasks/`` (shipped inside the wheel);
suites in the ``suites/`` subfolder of each. The first spec with a name wins.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


class SpecErrors(UserError):
    """Every problem of one spec file; as a one-line error, the problems joined by "; "."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _field_errors(path: Path, exc: ValidationError, prefix: str = "") -> list[str]:
    """Every problem of ``exc``, one line each: file, dotted field, what is expected."""
    lines = []
    for err in exc.errors():
        where = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"]]) or "(top level)"
        lines.append(f"{path}: field '{where}': {str(err['msg']).removeprefix('Value error, ')}")
    return lines


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in ``path``; bad YAML or another top-level type is a :class:`SpecErrors` naming the line."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecErrors([f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or str(exc).splitlines()[0]})"]) from None
    if not isinstance(raw, dict):
        raise SpecErrors([f"{path}: expected a mapping of fields, got {type(raw).__name__}"])
    return raw


def _parse(path: Path, model: type[BaseModel]) -> BaseModel:
    """``path`` validated as ``model``; every problem is a line naming file, field and expectation (:class:`SpecErrors`)."""
    raw = _read_yaml(path)
    try:
        return model(**raw)
    except ValidationError as exc:
        raise SpecErrors(_field_errors(path, exc)) from None


def _settings_errors(path: Path, family_name: Any, evaluator: Any) -> list[str]:
    """The problems of a spec's ``evaluator:`` block against its family's settings (none when the family is unknown)."""
    try:
        family = get_family(family_name) if isinstance(family_name, str) else None
    except UserError:
        return []  # the family field's own error says it
    if family is None or not isinstance(evaluator, dict):
        return []
    try:
        family.settings(**evaluator)
    except ValidationError as exc:
        return _field_errors(path, exc, "evaluator")
    return []


def load_task_file(path: str | Path) -> TaskSpec:
    """Parse one task spec file; a relative local data path is made relative to the file.

    Raises:
        SpecErrors: every problem of the file at once (fields, evaluator settings, a data
            source the family does not read, a local data file that does not exist).
    """
    path = Path(path)
    raw = _read_yaml(path)
    try:
        spec = TaskSpec(**raw)
    except ValidationError as exc:
        problems = _field_errors(path, exc)
        if not any(line.startswith(f"{path}: field 'evaluator") for line in problems):
            problems += _settings_errors(path, raw.get("family"), raw.get("evaluator", {}))
        raise SpecErrors(problems) from None
    problems = _settings_errors(path, spec.family, spec.evaluator)
    family = get_family(spec.family)
    if family.sources is not None and spec.data.source not in family.sources:
        problems.append(f"{path}: field 'data.source': {family.name} tasks read source {' or '.join(family.sources)}, not '{spec.data.source}'")
    if spec.data.source == "mteb" and spec.prompt != "{text}":
        problems.append(f"{path}: field 'prompt': mteb tasks take no template (mteb builds their texts); remove it")
    if spec.data.source == "local":
        data_path = Path(spec.data.path).expanduser()
        data_path = data_path if data_path.is_absolute() else path.parent / data_path
        if not data_path.is_file():
            problems.append(f"{path}: field 'data.path': data file '{data_path}' does not exist")
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"path": str(data_path)})})
    if problems:
        raise SpecErrors(problems)
    return spec


def _spec_name(path: Path) -> str:
    """The task name a spec file means: its ``name:`` when it can be read, else the file's stem."""
    try:
        name = yaml.safe_load(path.read_text()).get("name")
    except (OSError, yaml.YAMLError, AttributeError):
        name = None
    return name if isinstance(name, str) else path.stem


def _scan_tasks() -> tuple[dict[str, TaskSpec], dict[str, SpecErrors]]:
    """Every task spec found by name (earlier folders win), and the malformed files by the name they mean.

    A malformed file blocks only its own task: listing and running the others
    goes on, and asking for it by name raises its problems (:func:`get_task`).
    """
    found: dict[str, TaskSpec] = {}
    broken: dict[str, SpecErrors] = {}
    for folder in task_dirs():
        for path in sorted(folder.glob("*.yaml")):
            try:
                spec = load_task_file(path)
            except SpecErrors as exc:
                name = _spec_name(path)
                if name not in found:
                    broken.setdefault(name, exc)
                continue
            if spec.name not in broken:
                found.setdefault(spec.name, spec)
    return found, broken


def malformed_specs() -> dict[str, SpecErrors]:
    """The task and suite spec files found that do not parse, by the name they mean (`layerbench list tasks` warns of them)."""
    return _scan_tasks()[1] | _scan_suites()[1]


def all_tasks() -> dict[str, TaskSpec]:
    """Every well-formed task spec found, by name (earlier folders win); a malformed file is left out (:func:`malformed_tasks`)."""
    return _scan_tasks()[0]


def _scan_suites() -> tuple[dict[str, SuiteSpec], dict[str, SpecErrors]]:
    """Every suite spec found by name, and the malformed suite files by the name they mean (each blocks only itself)."""
    found: dict[str, SuiteSpec] = {}
    broken: dict[str, SpecErrors] = {}
    for folder in task_dirs():
        for path in sorted((folder / "suites").glob("*.yaml")):
            try:
                suite = load_suite_file(path)
            except SpecErrors as exc:
                broken.setdefault(_spec_name(path), exc)
                continue
            found.setdefault(suite.name, suite)
    return found, broken


def all_suites() -> dict[str, SuiteSpec]:
    """Every well-formed suite spec found, by name."""
    return _scan_suites()[0]


def load_suite_file(path: str | Path) -> SuiteSpec:
    """Parse one suite spec file."""
    suite = _parse(Path(path), SuiteSpec)
    assert isinstance(suite, SuiteSpec)
    return suite


def validate_path(path: str | Path) -> tuple[list[tuple[Path, str]], dict[Path, TaskSpec]]:
    """Check every spec at ``path`` (a task or suite file, or a folder of them and its ``suites/``), all at once.

    Returns:
        ``(file, problem)`` pairs, every problem of every file (empty: all
        good): fields, evaluator settings, a suite naming a task that neither
        ``path`` nor the registry holds; and the task specs that parsed, by
        file (:func:`layerbench.validation.validate_specs` reads their local data too).

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
    tasks: dict[Path, TaskSpec] = {}
    suites: list[tuple[Path, SuiteSpec]] = []
    for file in files:
        try:
            if file.parent.name == "suites":
                suites.append((file, load_suite_file(file)))
            else:
                tasks[file] = load_task_file(file)
        except SpecErrors as exc:
            problems += [(file, problem) for problem in exc.problems]
    known = {spec.name for spec in tasks.values()} | set(all_tasks()) if suites else set()
    for file, suite in suites:
        unknown = [name for name in suite.tasks if name not in known and not name.startswith("mteb:")]
        if unknown:
            problems.append((file, f"{file}: field 'tasks': unknown task(s) {', '.join(unknown)}"))
    return problems, tasks


def get_task(name: str) -> TaskSpec:
    """The task called ``name``; its malformed spec file raises that file's problems, an unknown name names the known ones."""
    tasks, broken = _scan_tasks()
    if name in broken:
        raise broken[name]
    if name not in tasks:
        raise UserError(f"unknown task '{name}'; see `layerbench list tasks` (known: {', '.join(sorted(tasks))})")
    return tasks[name]


def get_suite(name: str) -> SuiteSpec:
    """The suite called ``name``; its malformed spec file raises that file's problems."""
    suites, broken = _scan_suites()
    if name in broken and name not in suites:
        raise broken[name]
    if name not in suites:
        raise UserError(f"unknown suite '{name}'; known: {', '.join(sorted(suites))}")
    return suites[name]
