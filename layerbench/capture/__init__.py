"""Batched one-pass capture of every layer, mask-aware pooling and the activation cache.

By job: :mod:`~layerbench.capture.engine` (the request and the call), :mod:`~layerbench.capture.batching` (tokens,
batches, forward passes and their counters), :mod:`~layerbench.capture.sites` (the hooks of each capture site),
:mod:`~layerbench.capture.store` (pooled arrays, per-prompt kernels, the activation cache read and written),
:mod:`~layerbench.capture.cache` (the cache's storage), :mod:`~layerbench.capture.pooling`.
"""
from layerbench.capture.batching import CaptureStats, counting_passes
from layerbench.capture.engine import CaptureRequest, capture_layers, embed_layers, iter_token_states
from layerbench.capture.pooling import pool_layers
from layerbench.capture.sites import site_layers
from layerbench.capture.store import Capture, SiteCapture
from layerbench.choices import DEFAULT_SITE, POOLINGS, SITES

__all__ = ["DEFAULT_SITE", "POOLINGS", "SITES", "Capture", "CaptureRequest", "CaptureStats", "SiteCapture", "capture_layers", "counting_passes", "embed_layers",
           "iter_token_states", "pool_layers", "site_layers"]
