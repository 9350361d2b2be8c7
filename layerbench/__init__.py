"""layerbench: layer-wise representation quality, every layer of every model from one forward pass.

Python API::

    import layerbench
    handle = layerbench.load_model("smollm2-135m-q4")
    states = layerbench.embed_layers(handle, ["a text", "another"])   # [L+1, N, D]
    layerbench.metrics.matrix_entropy(states)                           # [L+1], one value per layer
    layerbench.run("smollm2-135m-q4", suite="quick", output="my-results")
    df = layerbench.load_results("my-results")
    items = layerbench.load_items("my-results")                         # what each score was computed from, item by item
    layerbench.best_layer(df)                                           # best layer per model and task
    layerbench.layer_curve(df, "concept-capitals", "accuracy")          # one curve against depth
    layerbench.summary(df)                                              # one row per model and task
    df[df.other_model.notna()]                                          # layer similarity across models (similarity tasks)
    layerbench.load_sketches("my-results")                              # each similarity run's per-layer sketches
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from layerbench.errors import UserError

__version__ = "0.1.0"

# Public name -> the module that defines it. Imported on first use (PEP 562), so that
# `import layerbench` and the CLI's --help, list and validate do not import torch.
_EXPORTS = {
    "best_layer": "layerbench.analysis",
    "layer_curve": "layerbench.analysis",
    "summary": "layerbench.analysis",
    "run": "layerbench.api",
    "capture_layers": "layerbench.capture",
    "CaptureRequest": "layerbench.capture",
    "embed_layers": "layerbench.capture",
    "iter_token_states": "layerbench.capture",
    "ModelHandle": "layerbench.models",
    "load_model": "layerbench.models",
    "load_results": "layerbench.results",
    "load_items": "layerbench.results",
    "load_sketches": "layerbench.results",
}
__all__ = ["CaptureRequest", "ModelHandle", "UserError", "best_layer", "capture_layers", "embed_layers", "iter_token_states", "layer_curve", "load_items", "load_model",
           "load_results", "load_sketches", "metrics", "run", "summary"]

if TYPE_CHECKING:
    from layerbench import metrics
    from layerbench.analysis import best_layer, layer_curve, summary
    from layerbench.api import run
    from layerbench.capture import CaptureRequest, capture_layers, embed_layers, iter_token_states
    from layerbench.models import ModelHandle, load_model
    from layerbench.results import load_items, load_results, load_sketches


def __getattr__(name: str) -> Any:
    if name == "metrics":
        return importlib.import_module("layerbench.metrics")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerbench' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
