"""Mask-aware pooling of token states into one vector per text."""
from __future__ import annotations

import torch

POOLINGS = ("mean", "last", "cls")


def pool_layers(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One pooling of a right-padded batch, over all layers at once.

    Args:
        hidden: ``[L+1, B, T, D]`` token states of one batch, any float dtype.
        mask: ``[B, T]`` attention mask, 1 for real tokens; right padding
            (the real tokens of row b are positions ``0 .. n_b - 1``), and
            every row has at least one real token.
        pooling: ``mean`` = sum over real tokens / n_b; ``last`` = position
            n_b - 1; ``cls`` = position 0.

    Returns:
        float32 ``[L+1, B, D]`` on ``hidden``'s device. Padding never enters:
        masked positions are replaced by zeros with ``torch.where`` (not
        multiplied, so a NaN in a padded position, which some attention
        kernels produce for all-masked query rows, cannot leak into the mean).
    """
    real = mask.to(torch.bool)
    counts = real.sum(dim=1)  # [B]
    if mask.device.type == "cpu" and bool((counts == 0).any()):
        # Checked on the CPU only: on a GPU the check would stall the batch
        # pipeline with a device sync; the engine never builds an empty row.
        raise ValueError("a text has no tokens after tokenization; pooling is undefined")
    if pooling == "cls":
        return hidden[:, :, 0, :].float()
    if pooling == "last":
        rows = torch.arange(hidden.shape[1], device=hidden.device)
        return hidden[:, rows, counts - 1, :].float()
    if pooling == "mean":
        summed = torch.where(real[None, :, :, None], hidden.float(), 0.0).sum(dim=2)  # [L+1, B, D]
        return summed / counts[None, :, None].to(summed.dtype)
    raise ValueError(f"unknown pooling '{pooling}'; use one of {', '.join(POOLINGS)}")
