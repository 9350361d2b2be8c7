"""A key/value cache that grows in place, for token-by-token decoding.

Hugging Face's ``DynamicCache`` appends a token by ``torch.cat`` of the whole
cache with the new keys and values: every decoding step copies every layer's
cache. After a few-shot prompt of 250 tokens repeated for 20 sampled paths,
that copy took 43% of SmolLM2's sampling time (``benchmarks/bench_consistency.py``
profiles it), more than the layers' matrix products. :func:`growing_cache`
gives the same cache with layers that keep spare capacity and write a new
token into it; attention reads a view of the filled part, the same numbers
as the concatenated tensor (tested against ``DynamicCache`` bit for bit).
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

# Capacity added beyond what a write needs: a quarter of the length, at least 16 tokens, so that appends rarely need a new
# buffer and a reorder of the rows (which copies the whole buffer) copies little that is unused.
_SPARE, _SPARE_SHARE = 16, 4


class _Buffers:
    """Keys and values ``[B, H, capacity, d]`` of which the first ``length`` positions are filled."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``[B, H, n, d]`` new keys and values after the filled part; returns views of everything filled."""
        n = keys.shape[-2]
        if self.keys is None or self.length + n > self.keys.shape[-2]:
            self._reserve(keys, values, self.length + n + max(_SPARE, (self.length + n) // _SPARE_SHARE))
        assert self.keys is not None and self.values is not None
        self.keys[:, :, self.length : self.length + n] = keys
        self.values[:, :, self.length : self.length + n] = values
        self.length += n
        return self.filled()

    def _reserve(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        shape = (keys.shape[0], keys.shape[1], capacity, keys.shape[-1])
        new_keys, new_values = keys.new_empty(shape), values.new_empty((*shape[:3], values.shape[-1]))
        if self.keys is not None and self.values is not None and self.length:
            new_keys[:, :, : self.length] = self.keys[:, :, : self.length]
            new_values[:, :, : self.length] = self.values[:, :, : self.length]
        self.keys, self.values = new_keys, new_values

    def filled(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.keys is not None and self.values is not None
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def rows(self, index: torch.Tensor) -> None:
        """Keep (or repeat) the batch rows ``index``."""
        if self.keys is not None and self.values is not None:
            self.keys, self.values = self.keys[index], self.values[index]

    def drop_last(self, n: int) -> None:
        self.length -= n


class _GrowingRows:
    """Crop and row reordering on a layer's ``_Buffers`` (shared by both growing layers while they hold buffers)."""

    buffers: _Buffers | None
    keys: torch.Tensor
    values: torch.Tensor
    is_initialized: bool

    def _crop_buffers(self, tokens_to_remove: int) -> None:
        assert self.buffers is not None
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, not {tokens_to_remove}")
        if tokens_to_remove and self.is_initialized:
            self.buffers.drop_last(-tokens_to_remove)
            self.keys, self.values = self.buffers.filled()

    def _select_rows(self, index: torch.Tensor) -> None:
        assert self.buffers is not None
        if self.buffers.length > 0:
            self.buffers.rows(index.to(self.keys.device))
            self.keys, self.values = self.buffers.filled()

    def _repeat_rows(self, repeats: int) -> None:
        if self.buffers is not None and self.buffers.length > 0:
            self._select_rows(torch.arange(self.keys.shape[0], device=self.keys.device).repeat_interleave(repeats))


class GrowingLayer(_GrowingRows, DynamicLayer):
    """A ``DynamicLayer`` whose ``update`` writes into spare capacity instead of concatenating (module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.buffers = _Buffers()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.buffers is not None
        self.keys, self.values = self.buffers.append(key_states, value_states)
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        self._crop_buffers(tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._repeat_rows(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._select_rows(indices)


class GrowingSlidingWindowLayer(_GrowingRows, DynamicSlidingWindowLayer):
    """A ``DynamicSlidingWindowLayer`` that grows in place while the sequence is shorter than its window (below it, the
    window layer keeps and returns every token, as a full layer does); from the window on, it is Hugging Face's layer."""

    cumulative_length: int

    def __init__(self, sliding_window: int, **kwargs: Any) -> None:
        super().__init__(sliding_window=sliding_window, **kwargs)
        self.buffers = _Buffers()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.buffers is None or self.record_past or self.cumulative_length + key_states.shape[-2] >= self.sliding_window:
            if self.buffers is not None:  # from here on, Hugging Face's window logic on plain tensors
                self.keys, self.values = (t.contiguous() for t in self.buffers.filled()) if self.buffers.length else (self.keys, self.values)
                self.buffers = None
            return super().update(key_states, value_states, *args, **kwargs)
        self.cumulative_length += key_states.shape[-2]
        self.keys, self.values = self.buffers.append(key_states, value_states)
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        if self.buffers is None:
            return super().crop(tokens_to_remove)
        self._crop_buffers(tokens_to_remove)
        self.cumulative_length = self.buffers.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.buffers is None:
            return super().batch_repeat_interleave(repeats)
        self._repeat_rows(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.buffers is None:
            return super().batch_select_indices(indices)
        self._select_rows(indices)


def growing_cache(model: Any) -> DynamicCache:
    """The ``DynamicCache`` that ``model`` would make, with each full and sliding-window layer growing in place.

    Layers of other kinds (linear attention, indexed, quantized) are left as Hugging Face makes them.
    """
    cache = DynamicCache(config=model.config)
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[i] = GrowingLayer()
        elif type(layer) is DynamicSlidingWindowLayer:
            cache.layers[i] = GrowingSlidingWindowLayer(sliding_window=layer.sliding_window)
    return cache
