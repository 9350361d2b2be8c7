"""Data larger than memory: pooled states spilled to disk in float16, and the pooled metrics streamed over them."""
from __future__ import annotations

import os

import numpy as np
import pytest

from layerbench import CaptureRequest, capture_layers
from layerbench.metrics import anisotropy, effective_rank, matrix_entropy, mean_norm
from layerbench.metrics.streaming import streaming_pooled_metrics
from layerbench.metrics.suite import MetricPlan, evaluate_metrics


def _memmap(tmp_path, array: np.ndarray) -> np.memmap:
    disk = np.lib.format.open_memmap(tmp_path / "states.npy", mode="w+", dtype=np.float16, shape=array.shape)
    disk[:] = array
    return disk


@pytest.mark.parametrize("n, d", [(300, 24), (20, 64)])  # more rows than dimensions, and fewer
def test_streamed_pooled_metrics_equal_the_in_memory_ones(tmp_path, n, d):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(3, n, d)) * rng.uniform(0.5, 3.0, size=d) + 2.0).astype(np.float32)
    disk = _memmap(tmp_path, X)
    exact = np.asarray(disk, dtype=np.float32)  # what the file holds; the streaming reads the same float16 values
    streamed = streaming_pooled_metrics(disk, rows_per_block=7)  # many small blocks, a ragged last one
    np.testing.assert_allclose(streamed["dataset_entropy"], matrix_entropy(exact), rtol=0, atol=1e-9)
    np.testing.assert_allclose(streamed["effective_rank"], effective_rank(exact), rtol=1e-9)
    np.testing.assert_allclose(streamed["anisotropy"], anisotropy(exact), rtol=0, atol=1e-12)
    np.testing.assert_allclose(streamed["mean_norm"], mean_norm(exact), rtol=1e-12)


def test_streaming_closed_forms(tmp_path):
    # Rank one: every centred row lies on one line, entropy 0; orthonormal directions: log(d) for N >> d equally spread.
    line = np.outer(np.linspace(-1, 1, 50), np.ones(8))[None].astype(np.float32)
    assert streaming_pooled_metrics(_memmap(tmp_path, line))["dataset_entropy"][0] == pytest.approx(0.0, abs=1e-9)
    axes = np.concatenate([np.eye(4), -np.eye(4)] * 25)[None].astype(np.float32)  # ±e_i, centred already
    assert streaming_pooled_metrics(axes)["dataset_entropy"][0] == pytest.approx(np.log(4), abs=1e-12)


def test_a_capture_over_the_memory_budget_spills_to_float16_and_the_metrics_stream(minilm):
    texts = [f"Sentence number {i} is about {w}." for i, w in enumerate(["cats", "stocks", "rain", "music", "code"] * 8)]
    in_memory = capture_layers(minilm, CaptureRequest(texts, pooling="mean", cache=False)).pooled
    spilled = capture_layers(minilm, CaptureRequest(texts, pooling="mean", cache=False, memory_budget=1)).pooled
    assert isinstance(spilled, np.memmap) and spilled.dtype == np.float16 and spilled.shape == in_memory.shape
    # The spill file is gone from the folder at once (the mapping holds the space): a long-lived worker piles up nothing.
    from layerbench.config import cache_dir

    assert not list((cache_dir() / "spill").glob(f"pooled-{os.getpid()}-*.npy"))
    np.testing.assert_allclose(np.asarray(spilled, np.float32), in_memory, rtol=2e-3, atol=2e-3)  # float16 storage only
    plan = MetricPlan.from_names(["dataset_entropy", "dataset_entropy_normalized", "effective_rank", "anisotropy", "mean_norm", "intrinsic_dimension"])
    streamed, _ = evaluate_metrics(plan, spilled, {}, None)
    reference, _ = evaluate_metrics(plan, np.asarray(spilled, np.float32), {}, None)
    assert streamed[["metric", "layer"]].equals(reference[["metric", "layer"]])
    np.testing.assert_allclose(streamed.value, reference.value, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(streamed.stderr, reference.stderr, rtol=1e-9, equal_nan=True)


def test_the_activation_cache_can_live_at_an_fsspec_url(minilm):
    # What workers on many nodes share through s3:// or gs://, here through fsspec's in-process memory:// file system.
    from layerbench.capture import CaptureStats

    texts = ["The cache is shared.", "By every worker.", "Through one URL."]
    first, second = CaptureStats(), CaptureStats()
    fresh = capture_layers(minilm, CaptureRequest(texts, pooling="mean", cache="memory://layerbench-test/activations"), stats=first).pooled
    again = capture_layers(minilm, CaptureRequest(texts, pooling="mean", cache="memory://layerbench-test/activations"), stats=second).pooled
    assert first.texts_computed == 3 and second.cache_hits == 3 and second.forward_passes == 0
    np.testing.assert_array_equal(fresh, again)  # entries are float32: a hit is bit for bit the fresh states
