"""Mask-aware pooling of token states into one vector per text."""
from __future__ import annotations

import torch

POOLINGS = ("mean", "last", "cls")


def pool_layers(hidden: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every pooling of a right-padded batch, over all layers at once.

    Args:
        hidden: ``[L+1, B, T, D]`` token states of one batch, any float dtype.
        mask: ``[B, T]`` attention mask, 1 for real tokens; right padding
            (the real tokens of row b are positions ``0 .. n_b - 1``).

    Returns:
        ``{"mean", "last", "cls"}`` -> float32 ``[L+1, B, D]``:
        ``mean`` = sum over real tokens / n_b; ``last`` = position n_b - 1;
        ``cls`` = position 0. Padding never enters: masked positions are
        replaced by zeros with ``torch.where`` (not multiplied, so a NaN in a
        padded position, which some attention kernels produce for all-masked
        query rows, cannot leak into the mean).
    """
    real = mask.to(torch.bool)
    counts = real.sum(dim=1)  # [B]
    if bool((counts == 0).any()):
        raise ValueError("a text has no tokens after tokenization; pooling is undefined")
    hidden = hidden.float()
    summed = torch.where(real[None, :, :, None], hidden, 0.0).sum(dim=2)  # [L+1, B, D]
    mean = summed / counts[None, :, None].to(summed.dtype)
    rows = torch.arange(hidden.shape[1], device=hidden.device)
    last = hidden[:, rows, counts - 1, :]
    cls = hidden[:, :, 0, :]
    return {"mean": mean, "last": last, "cls": cls}
