"""The options of a run, declared and validated once.

:class:`RunConfig` is what a user chooses. ``layerbench run`` builds one
from its options and :func:`layerbench.run` accepts one (or its fields as
keywords); every value is checked here, before any model loads or file is
written, and a bad one is a one-line :class:`~layerbench.errors.UserError`.
What needs the registries (task, suite, protocol and metric names) or the
machine (a CUDA device, bitsandbytes) is checked when the run resolves the
config (:func:`layerbench.api.run`), still before any work.

This module imports no torch: the CLI builds the config at once.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from layerbench.choices import DEVICES, DTYPES, EXECUTORS, METRIC_DEVICES, POOLINGS, ROBUSTNESS, SITES, unknown_choice
from layerbench.errors import UserError

__all__ = ["RunConfig", "parse_layers", "split_names"]


def split_names(value: Any) -> tuple[str, ...]:
    """A name, a sequence of names or comma-separated names -> a tuple without repeats, in order."""
    if value is None:
        return ()
    items = [value] if isinstance(value, (str, Path)) else list(value)
    parts = [part.strip() for item in items for part in str(item).split(",")]
    return tuple(dict.fromkeys(part for part in parts if part))


def _one_of(kind: str, choices: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if v is not None and v not in choices:
                raise ValueError(unknown_choice(kind, v, choices))
        return value

    return check


Names = Annotated[tuple[str, ...], BeforeValidator(split_names)]


def parse_layers(value: Any) -> tuple[int, ...]:
    """Layer numbers from ``"0,6,12"``, ``"20-30"`` (inclusive), a mix (``"0,10-12"``), or a sequence of ints: sorted, without repeats.

    Raises:
        ValueError: a part that is not a number or an ``a-b`` range with a <= b, or a negative number.
    """
    if value is None:
        return ()
    if isinstance(value, int):
        value = [value]
    parts = [part.strip() for item in ([value] if isinstance(value, str) else list(value)) for part in str(item).split(",")]
    layers: set[int] = set()
    for part in filter(None, parts):
        first, dash, last = part.partition("-")
        try:
            start, stop = int(first), int(last) if dash else int(first)
        except ValueError:
            raise ValueError(f"'{part}' is not a layer number or a range like 20-30") from None
        if start < 0 or stop < start:
            raise ValueError(f"'{part}' is not a layer number or a range a-b with 0 <= a <= b")
        layers.update(range(start, stop + 1))
    return tuple(sorted(layers))


class RunConfig(BaseModel):
    """Everything a user chooses for a run; its JSON is in every manifest.

    Attributes:
        models: registry aliases, Hub ids, local folders or GGUF files.
        tasks: task names (``mteb:NAME`` for any mteb task); empty: the suite's.
        suite: a named set of tasks (None with no tasks: ``default``).
        output: the results folder, or an fsspec URL (default ``layerbench-results``, never the committed ``results/``).
        reference: allow writing into a reference results folder (one that holds ``.layerbench-reference``,
            as the committed ``results/`` does); ``make leaderboard`` passes it, a run by hand should not.
        revision: the Hub revision of the models.
        limit: at most this many examples per task (a seeded subsample; None: the suite's, else all).
        seed: seeds python, numpy, torch and every subsample.
        device, dtype, device_map: where and how the models load.
        batch_size: texts per forward pass, or ``auto``.
        max_length: truncate inputs to this many tokens (None: the suite's, else the task's, else the model's limit).
        overwrite: redo every task part whose results exist.
        update: redo the task parts whose results exist from another config (a changed spec or option) and
            skip those recorded with this one: what rebuilding a results folder after a change needs.
        cache: read and write the activation cache.
        metrics: label-free metrics to compute (None: all registered; empty: none).
        metric_samples: texts per task the token and view metrics read (None: the suite's, else 512).
        pooling: pool every task this way (None: each protocol's or task's own).
        protocols: run every task under these protocols (``paper``: each family's; empty: the suite's, else each task's own).
        sites: capture every task at these sites (empty: each protocol's or task's own).
        robustness: robustness variants of probe tasks (``noise``, ``bfloat16``, ``int8``).
        executor: ``local`` (this process) or ``ray``.
        address: the Ray cluster to join (``--executor ray`` only).
        gpus_per_job, cpus_per_job: resources of each model's Ray worker.
        jobs: worker processes that evaluate the layers of probe and mteb tasks (None: ``$LAYERBENCH_JOBS``,
            else the cores available; under Ray, each worker's ``cpus_per_job``). The rows do not depend on it.
        layers: capture and evaluate only these layer numbers (empty: every layer); the depth summaries read them alone.
        metrics_device: where the label-free metrics compute (None: where the model runs; ``cpu`` or ``cuda``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: Names = Field(min_length=1)
    tasks: Names = ()
    suite: str | None = None
    output: Annotated[str, BeforeValidator(str)] = "layerbench-results"
    revision: str | None = None
    limit: int | None = Field(default=None, ge=2)
    seed: int = 0
    device: Annotated[str, AfterValidator(_one_of("device", DEVICES))] = "auto"
    dtype: Annotated[str, AfterValidator(_one_of("dtype", DTYPES))] = "auto"
    device_map: Literal["auto"] | None = None
    batch_size: int | Literal["auto"] = "auto"
    max_length: int | None = Field(default=None, ge=1)
    overwrite: bool = False
    update: bool = False
    reference: bool = False
    cache: bool = True
    metrics: Annotated[tuple[str, ...] | None, BeforeValidator(lambda v: v if v is None else split_names(v))] = None
    metric_samples: int | None = Field(default=None, ge=2)
    pooling: Annotated[str | None, AfterValidator(_one_of("pooling", POOLINGS))] = None
    protocols: Names = ()
    sites: Annotated[Names, AfterValidator(_one_of("capture site", SITES))] = ()
    robustness: Annotated[Names, AfterValidator(_one_of("robustness variant", ROBUSTNESS))] = ()
    executor: Annotated[str, AfterValidator(_one_of("executor", EXECUTORS))] = "local"
    address: str | None = None
    gpus_per_job: float = Field(default=1.0, ge=0)
    cpus_per_job: float = Field(default=1.0, ge=0)
    jobs: int | None = Field(default=None, ge=1)
    layers: Annotated[tuple[int, ...], BeforeValidator(parse_layers)] = ()
    metrics_device: Annotated[str | None, AfterValidator(_one_of("metrics device", METRIC_DEVICES))] = None

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.tasks and self.suite:
            raise ValueError("give --tasks or --suite, not both")
        if self.executor == "local" and self.address is not None:
            raise ValueError("--address needs --executor ray")
        if isinstance(self.batch_size, int) and self.batch_size < 1:
            raise ValueError(f"--batch-size must be a positive integer or 'auto', got {self.batch_size}")
        return self

    @classmethod
    def of(cls, models: str | Sequence[str] | None = None, **options: Any) -> RunConfig:
        """A validated config from the models and any other fields; a bad value is a one-line :class:`UserError`."""
        try:
            return cls.model_validate({"models": models, **options})
        except ValidationError as exc:
            raise UserError(_one_line(exc)) from None  # pydantic's report names the field; the traceback adds nothing


# How a field is spelled on the command line, where that differs from --<field>.
_FLAGS = {"models": "--model", "tasks": "--tasks", "protocols": "--protocol", "sites": "--site", "cache": "--no-cache", "metrics": "--metrics / --no-metrics"}


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a check across fields: its message names the options
        return message
    field = str(error["loc"][0])
    if error["type"] == "missing" or (field == "models" and error["type"] == "too_short"):
        return "no model given; pass --model (see `layerbench list models`)" if field == "models" else f"{_FLAGS.get(field, field)} is required"
    if message.startswith("unknown "):  # our own choice checks say which value and what to use
        return message
    return f"{_FLAGS.get(field, '--' + field.replace('_', '-'))}: {message} (got {error.get('input')!r})"
