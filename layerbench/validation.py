"""``layerbench validate``: every problem of a folder of specs at once, its local data files included.

It sits above :mod:`layerbench.specs` and :mod:`layerbench.data`: the specs
know nothing of reading data, and the data layer reads specs.
"""
from __future__ import annotations

from pathlib import Path

from layerbench.errors import UserError
from layerbench.specs import TaskSpec, validate_path


def data_problems(spec: TaskSpec, file: Path) -> list[str]:
    """What reading a local data file of ``spec`` finds wrong (missing columns, no rows, a single label); [] for other sources.

    Only local files are read here: the other sources are packaged and
    tested, or need the network (``validate --online``).
    """
    if spec.data.source != "local" or not Path(spec.data.path).is_file():
        return []  # a missing file is already a problem of the spec
    from layerbench.data import load_task_data  # here: reading data costs imports that checking fields does not need

    try:
        load_task_data(spec)
    except UserError as exc:
        return [f"{file}: {exc}"]
    return []


def validate_specs(path: str | Path) -> list[tuple[Path, str]]:
    """Every ``(file, problem)`` of the specs at ``path`` (:func:`layerbench.specs.validate_path`) and of their local data files.

    Raises:
        UserError: ``path`` does not exist or holds no ``.yaml`` file.
    """
    problems, tasks = validate_path(path)
    return problems + [(file, problem) for file, spec in tasks.items() for problem in data_problems(spec, file)]
