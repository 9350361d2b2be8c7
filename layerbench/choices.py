"""One home for the names a user chooses among: poolings, capture sites, dtypes, devices, executors, robustness variants.

Pure constants, importing nothing heavy: the CLI builds its options from
them without importing torch, and specs, runner and capture check against
the same spellings. The meaning of each lives with its code (pooling in
:mod:`layerbench.capture.pooling`, sites in :mod:`layerbench.capture.sites`).
"""
from __future__ import annotations

from typing import Literal, get_args

Pooling = Literal["mean", "last", "cls"]
POOLINGS: tuple[str, ...] = get_args(Pooling)

Site = Literal["residual", "normed", "mlp-input"]
SITES: tuple[str, ...] = get_args(Site)
DEFAULT_SITE: Site = "residual"

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(Dtype)

Device = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[str, ...] = get_args(Device)

# Where the label-free metrics compute (--metrics-device); unset: where the model runs.
MetricDevice = Literal["cpu", "cuda", "mps"]
METRIC_DEVICES: tuple[str, ...] = get_args(MetricDevice)

Executor = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = get_args(Executor)

# Robustness variants of probe tasks (Jin et al. 2024), each adding rows with subset "<subset>+<variant>":
# noise: a seeded random-letter prefix on every text; bfloat16 / int8: the model loaded in that precision.
Robustness = Literal["noise", "bfloat16", "int8"]
ROBUSTNESS: tuple[str, ...] = get_args(Robustness)


def unknown_choice(kind: str, value: str, choices: tuple[str, ...]) -> str:
    """The one-line message for a name outside ``choices``: ``unknown pooling 'max'; use one of mean, last, cls``."""
    return f"unknown {kind} '{value}'; use one of {', '.join(choices)}"
