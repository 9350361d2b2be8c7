"""Mask-aware pooling of token states into one vector per text."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from layerbench.choices import POOLINGS, unknown_choice


def pool_layers(hidden: torch.Tensor | Sequence[torch.Tensor], mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One pooling of a right-padded batch, layer by layer.

    Args:
        hidden: ``[K, B, T, D]`` token states of one batch, or a sequence of K
            ``[B, T, D]`` tensors (Hugging Face's ``hidden_states`` as they
            come: pooling layer by layer never builds the stacked copy), any float dtype.
        mask: ``[B, T]`` attention mask, 1 for real tokens; right padding
            (the real tokens of row b are positions ``0 .. n_b - 1``), and
            every row has at least one real token.
        pooling: ``mean`` = sum over real tokens / n_b; ``last`` = position
            n_b - 1; ``cls`` = position 0.

    Returns:
        float32 ``[K, B, D]`` on ``hidden``'s device. Padding never enters:
        masked positions are replaced by zeros with ``torch.where`` (not
        multiplied, so a NaN in a padded position, which some attention
        kernels produce for all-masked query rows, cannot leak into the mean).
        One layer at a time keeps every temporary small: a stacked
        ``torch.where`` allocated fresh pages for the whole batch each time,
        which on a CPU cost more than the arithmetic.
    """
    if pooling not in POOLINGS:
        raise ValueError(unknown_choice("pooling", pooling, POOLINGS))
    real = mask.to(torch.bool)
    counts = real.sum(dim=1)  # [B]
    if mask.device.type == "cpu" and bool((counts == 0).any()):
        # Checked on the CPU only: on a GPU the check would stall the batch
        # pipeline with a device sync; the engine never builds an empty row.
        raise ValueError("a text has no tokens after tokenization; pooling is undefined")
    first = hidden[0]
    out = torch.empty((len(hidden), first.shape[0], first.shape[-1]), dtype=torch.float32, device=first.device)
    rows = torch.arange(first.shape[0], device=first.device)
    for layer, states in enumerate(hidden):  # [B, T, D]
        if pooling == "cls":
            out[layer] = states[:, 0, :]
        elif pooling == "last":
            out[layer] = states[rows, counts - 1, :]
        else:
            torch.sum(torch.where(real[:, :, None], states.float(), 0.0), dim=1, out=out[layer])
    if pooling == "mean":
        out /= counts[None, :, None].to(out.dtype)
    return out
