"""Batched one-pass capture of every layer, mask-aware pooling and the activation cache."""
from layerbench.capture.engine import Capture, CaptureStats, SiteCapture, capture_layers, counting_passes, embed_layers, iter_token_states
from layerbench.capture.pooling import pool_layers
from layerbench.capture.sites import site_layers
from layerbench.choices import DEFAULT_SITE, POOLINGS, SITES

__all__ = ["DEFAULT_SITE", "POOLINGS", "SITES", "Capture", "CaptureStats", "SiteCapture", "capture_layers", "counting_passes", "embed_layers", "iter_token_states", "pool_layers", "site_layers"]
