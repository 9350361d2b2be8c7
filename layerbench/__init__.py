"""layerbench: layer-wise representation quality, every layer of every model from one forward pass.

Python API::

    import layerbench
    handle = layerbench.load_model("smollm2-135m-q4")
    states = layerbench.embed_layers(handle, ["a text", "another"])   # [L+1, N, D]
    layerbench.metrics.matrix_entropy(states)                           # [L+1], one value per layer
    layerbench.run("smollm2-135m-q4", suite="quick", output="results")
    df = layerbench.load_results("results")
    layerbench.best_layer(df)                                           # best layer per model and task
    layerbench.layer_curve(df, "concept-capitals", "accuracy")          # one curve against depth
    layerbench.summary(df)                                              # one row per model and task
"""
from layerbench.analysis import best_layer, layer_curve, summary
from layerbench.api import run
from layerbench import metrics
from layerbench.capture import capture_layers, embed_layers, iter_token_states
from layerbench.errors import UserError
from layerbench.models import ModelHandle, load_model
from layerbench.results import load_results

__version__ = "0.1.0"
__all__ = ["ModelHandle", "UserError", "best_layer", "capture_layers", "embed_layers", "iter_token_states", "layer_curve", "load_model",
           "load_results", "metrics", "run", "summary"]
