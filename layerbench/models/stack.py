"""A causal LM's decoder run one block at a time, from any layer, with the model's own blocks, rotary embeddings and masks.

Hugging Face's forward runs every block from the embedding. An intervention
that writes into layer ``k`` leaves blocks ``0..k-1`` as they were, so a pass
can start at block ``k`` from states it already has (back-patching's patched
rows share their lower blocks: :mod:`layerbench.models.branching`). This
module makes the same calls the model's forward makes (its decoder layers,
its rotary embedding per layer type, the layer's mask), so a pass started at
block ``k`` from the full pass's layer ``k`` equals the full pass at every
later layer bit for bit (``tests/test_branching.py``, per architecture).

Supported: the architectures whose forward is this loop (Llama, Qwen2,
Gemma 3); :func:`decoder_stack` returns None for the others, which keep the
model's own forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layerbench.models.loading import ModelHandle

# model_type -> whether its rotary embedding takes the layer type (Gemma 3: local and global frequencies).
_ROTARY_BY_LAYER_TYPE = {"llama": False, "qwen2": False, "gemma3_text": True, "gemma3": True}


@dataclass(frozen=True)
class DecoderStack:
    """The parts of a decoder-only model's forward: token embedding, rotary embedding, blocks and their layer types.

    Layer ``l`` is the convention of :mod:`layerbench.models.residual`: 0 the embedding output, ``l`` the output of
    block ``l - 1`` (raw, before the final norm).
    """

    embedding: nn.Module
    rotary: nn.Module
    blocks: nn.ModuleList
    layer_types: tuple[str, ...]
    rotary_by_layer_type: bool

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` token ids -> ``[B, T, D]`` layer-0 states (Gemma's scaling is inside its embedding module)."""
        return self.embedding(ids)

    def position_embeddings(self, states: torch.Tensor, position_ids: torch.Tensor) -> dict[str, Any]:
        """The rotary ``(cos, sin)`` of each layer type at ``position_ids`` ``[1 or B, T]``, as the model's forward computes them."""
        if self.rotary_by_layer_type:
            return {kind: self.rotary(states, position_ids, kind) for kind in set(self.layer_types)}
        shared = self.rotary(states, position_ids)
        return {kind: shared for kind in set(self.layer_types)}

    def block(self, index: int, states: torch.Tensor, position_ids: torch.Tensor, cache: Any, rotary: dict[str, Any],
              masks: dict[str, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Block ``index`` on ``[B, T, D]`` states: layer ``index`` in, layer ``index + 1`` out, its keys and values appended to ``cache``.

        Args:
            rotary: :meth:`position_embeddings` of these positions.
            masks: per layer type the mask the model's forward would pass (None: no mask, as the forward passes for
                one new token per row with no padding).
        """
        kind = self.layer_types[index]
        return self.blocks[index](states, attention_mask=(masks or {}).get(kind), position_embeddings=rotary[kind],
                                  position_ids=position_ids, cache=cache, use_cache=True)


def decoder_stack(handle: ModelHandle) -> DecoderStack | None:
    """The decoder stack of a loaded causal LM, or None where its architecture is not one this loop reproduces."""
    model = handle.model
    config = model.config
    model_type = getattr(config, "model_type", "")
    base = getattr(model, "model", None)
    if model_type not in _ROTARY_BY_LAYER_TYPE or base is None or not hasattr(base, "rotary_emb") or handle.anatomy.embedding is None:
        return None
    n_layers = config.num_hidden_layers
    layer_types = tuple(getattr(config, "layer_types", None) or ["full_attention"] * n_layers)
    return DecoderStack(embedding=handle.anatomy.embedding, rotary=base.rotary_emb, blocks=handle.anatomy.blocks,
                        layer_types=layer_types, rotary_by_layer_type=_ROTARY_BY_LAYER_TYPE[model_type])
