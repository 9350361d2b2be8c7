"""Batched one-pass capture of every layer, mask-aware pooling and the activation cache."""
from layerbench.capture.engine import CaptureStats, embed_layers, iter_token_states
from layerbench.capture.pooling import POOLINGS, pool_layers

__all__ = ["CaptureStats", "POOLINGS", "embed_layers", "iter_token_states", "pool_layers"]
