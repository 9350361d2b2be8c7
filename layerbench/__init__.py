"""layerbench: layer-wise representation quality, every layer of every model from one forward pass.

Python API::

    import layerbench
    handle = layerbench.load_model("smollm2-135m-q4")
    states = layerbench.embed_layers(handle, ["a text", "another"])   # [L+1, N, D]
    layerbench.metrics.matrix_entropy(states)                           # [L+1], one value per layer
    layerbench.run("smollm2-135m-q4", suite="quick", output="results")
    df = layerbench.load_results("results")
"""
from layerbench.api import run
from layerbench import metrics
from layerbench.capture import capture_layers, embed_layers, iter_token_states
from layerbench.errors import UserError
from layerbench.models import ModelHandle, load_model
from layerbench.results import load_results

__version__ = "0.1.0"
__all__ = ["ModelHandle", "UserError", "capture_layers", "embed_layers", "iter_token_states", "load_model", "load_results", "metrics", "run"]
