"""Perturbed copies of a checkpoint, for calibrating a regression gate: how large a change does it see, and what does it let pass?"""
from __future__ import annotations

import shutil
from pathlib import Path


def noised_copy(checkpoint: str | Path, target: str | Path, scale: float, seed: int = 0) -> Path:
    """A copy of a safetensors checkpoint folder whose every weight matrix has Gaussian noise of ``scale`` x its own standard deviation added.

    ``scale`` 1e-3 is a harmless change (the gate must pass it); 0.5 damages a
    small model (the gate must fail it). Vectors (norms, biases) are left as
    they are. The noise is seeded: the same ``seed`` gives the same copy.

    Args:
        checkpoint: a folder with ``model.safetensors`` (a packaged GGUF model's converted folder:
            ``layerbench.models.resolve.resolve_checkpoint(name).path``).
        target: the folder to write (must not exist).

    Returns:
        ``target``.
    """
    import torch
    from safetensors.torch import load_file, save_file

    target = Path(target)
    shutil.copytree(checkpoint, target)
    weights = load_file(target / "model.safetensors")
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in weights.items():
        if tensor.ndim == 2 and tensor.is_floating_point():
            weights[name] = tensor + scale * tensor.float().std() * torch.randn(tensor.shape, generator=generator)
    save_file(weights, target / "model.safetensors")
    (target / "layerbench-source.json").unlink(missing_ok=True)  # it names the source it was converted from; this copy is not that
    return target
