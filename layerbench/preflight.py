"""What a run can check before it loads a model or reads a text: every problem at once, in seconds.

The options, the task specs (each under every protocol the run asks for) and
each model's configuration file (not its weights) are enough to know that a
``--limit`` leaves a probe too few examples per class, that ``--layers`` asks
for a layer a model does not have, or that a protocol does not exist. Finding
that after minutes of capture is what this spares.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from layerbench.errors import UserError
from layerbench.families import get_family
from layerbench.run_config import RunConfig
from layerbench.specs import TaskSpec
from layerbench.specs.protocols import resolve_protocol


def model_layers(path: Any) -> int | None:
    """The number of blocks L a checkpoint folder's configuration declares (None when it has no ``config.json`` that declares it:
    a ``.gguf`` file is checked once loaded)."""
    from transformers import AutoConfig

    if not (Path(path) / "config.json").is_file():
        return None
    config = AutoConfig.from_pretrained(path)
    for candidate in (config, getattr(config, "text_config", None)):
        layers = getattr(candidate, "num_hidden_layers", None)
        if isinstance(layers, int):
            return layers
    return None


def problems(config: RunConfig, specs: list[TaskSpec], checkpoints: dict[str, Any]) -> list[str]:
    """Every problem of the run that the options, the specs and the models' configurations show (empty: none).

    Args:
        checkpoints: model -> its resolved checkpoint (``.path``: a folder with ``config.json``).
    """
    found = []
    if config.layers:
        for model, checkpoint in checkpoints.items():
            depth = model_layers(checkpoint.path)
            beyond = sorted(layer for layer in config.layers if depth is not None and layer > depth)
            if beyond:
                found.append(f"--layers asks for layer {', '.join(map(str, beyond))}; model '{model}' has layers 0..{depth}")
    for spec in specs:
        family = get_family(spec.family)
        for name in config.protocols or (spec.protocol,):
            protocol = resolve_protocol(name, spec.family)
            if protocol is None:
                continue  # a family without that protocol is skipped at run time, with a line that says so
            found += family.problems_before_loading(spec.under(protocol.name, protocol.settings), config.limit)
    return list(dict.fromkeys(found))


def check(config: RunConfig, specs: list[TaskSpec], checkpoints: dict[str, Any]) -> None:
    """Raise every :func:`problems` of the run at once.

    Raises:
        UserError: the problems, joined by "; ".
    """
    found = problems(config, specs, checkpoints)
    if found:
        raise UserError(f"{len(found)} problem(s) found before loading any model: " + "; ".join(found))
