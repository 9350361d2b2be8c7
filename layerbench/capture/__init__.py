"""Batched one-pass capture of every layer, mask-aware pooling and the activation cache."""
from layerbench.capture.engine import Capture, CaptureStats, capture_layers, embed_layers, iter_token_states
from layerbench.capture.pooling import POOLINGS, pool_layers

__all__ = ["POOLINGS", "Capture", "CaptureStats", "capture_layers", "embed_layers", "iter_token_states", "pool_layers"]
