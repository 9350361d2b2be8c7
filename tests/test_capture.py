"""The one-pass capture engine: equivalence with references, mask-awareness, caching, back-off."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import LONG, SHORT, check_padding_invariance
from sentence_transformers import SentenceTransformer

from layerbench import UserError, embed_layers, iter_token_states, metrics
from layerbench.capture import CaptureRequest, CaptureStats, batching, capture_layers, pool_layers


class ForwardCounter:
    """Counts forward calls of a module with a pre-hook (independent of the engine's own counter)."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self._hook = module.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def close(self):
        self._hook.remove()


def test_pool_layers_closed_form_and_padding_never_leaks():
    hidden = torch.arange(2 * 2 * 3 * 1, dtype=torch.float32).reshape(2, 2, 3, 1)  # [L+1=2, B=2, T=3, D=1]
    hidden[:, 1, 2] = float("nan")  # a padded position of row 1, as all-masked attention rows can produce
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    expected = {"mean": [[1.0, 3.5], [7.0, 9.5]], "last": [[2.0, 4.0], [8.0, 10.0]], "cls": [[0.0, 3.0], [6.0, 9.0]]}
    for pooling, values in expected.items():
        pooled = pool_layers(hidden, mask, pooling)
        assert pooled.dtype == torch.float32 and pooled.shape == (2, 2, 1)
        np.testing.assert_allclose(pooled[:, :, 0], values)
    with pytest.raises(ValueError, match="no tokens"):
        pool_layers(hidden, torch.tensor([[1, 1, 1], [0, 0, 0]]), "mean")


def test_minilm_last_layer_equals_sentence_transformers_before_normalize(minilm, tmp_path):
    states = embed_layers(minilm, SHORT + LONG, pooling="mean", cache=tmp_path)
    assert states.shape == (7, 5, 384) and states.dtype == np.float32
    full = SentenceTransformer(str(minilm.checkpoint.path), device="cpu")
    assert type(full[-1]).__name__ == "Normalize"
    before_normalize = SentenceTransformer(modules=list(full)[:-1], device="cpu")
    reference = before_normalize.encode(SHORT + LONG, convert_to_numpy=True)
    assert np.abs(states[-1] - reference).max() < 1e-5


def test_layer_zero_is_the_embedding_output(minilm, tmp_path):
    states = embed_layers(minilm, ["Paris is lovely."], pooling="cls", cache=False)
    ids = minilm.tokenizer(["Paris is lovely."], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        embedded = minilm.model.embeddings(input_ids=ids)[0, 0].numpy()
    np.testing.assert_allclose(states[0, 0], embedded, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
@pytest.mark.parametrize("model_name", ["minilm", "smollm"])
def test_pooling_is_invariant_to_batching_and_padding(model_name, pooling, request):
    """A text's vectors alone equal its vectors in a batch with much longer texts.

    Bound: 1e-5 relative to the largest magnitude in each layer. SmolLM2's
    residual stream reaches values in the thousands, where one float32 ulp is
    ~5e-4, so an absolute 1e-5 is below float32 resolution there; MiniLM's
    values are O(1), where the relative bound is about the absolute one.
    """
    check_padding_invariance(request.getfixturevalue(model_name), pooling)


def test_a_cache_hit_runs_no_forward_pass(minilm, tmp_path):
    counter = ForwardCounter(minilm.model.base_model)
    try:
        first = embed_layers(minilm, SHORT, pooling="mean", cache=tmp_path)
        assert counter.calls == 1
        stats = CaptureStats()
        again = embed_layers(minilm, SHORT, pooling="mean", cache=tmp_path, stats=stats)
        assert counter.calls == 1 and stats.forward_passes == 0 and stats.cache_hits == 3
        np.testing.assert_array_equal(first, again)
        # The pooling is part of the key: another pooling is computed, then cached too.
        last = embed_layers(minilm, SHORT, pooling="last", cache=tmp_path, stats=stats)
        assert counter.calls == 2
        np.testing.assert_array_equal(last, embed_layers(minilm, SHORT, pooling="last", cache=tmp_path))
        assert counter.calls == 2
    finally:
        counter.close()


def test_a_truncated_or_corrupt_cache_entry_is_recomputed(minilm, tmp_path):
    reference = embed_layers(minilm, SHORT, pooling="mean", cache=tmp_path)
    files = sorted(p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["index", "shards"]  # one shard and its index for the three entries
    shard = next((tmp_path / "shards").iterdir())
    blob = bytearray(shard.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in the last entry
    shard.write_bytes(bytes(blob))
    stats = CaptureStats()
    again = embed_layers(minilm, SHORT, pooling="mean", cache=tmp_path, stats=stats)
    # The three texts share one batch, which is run again whole (so every state comes from the same batch as before).
    assert stats.cache_rejected == 1 and stats.cache_hits == 0 and stats.texts_computed == 3
    np.testing.assert_array_equal(again, reference)
    stats = CaptureStats()
    np.testing.assert_array_equal(embed_layers(minilm, SHORT, pooling="mean", cache=tmp_path, stats=stats), reference)
    assert stats.cache_hits == 3 and stats.forward_passes == 0  # the rewritten entries, newest first, are trusted
    newest = max((tmp_path / "shards").iterdir())
    newest.write_bytes(newest.read_bytes()[:100])  # truncated: the older copies are read, but for the corrupt one
    stats = CaptureStats()
    np.testing.assert_array_equal(embed_layers(minilm, SHORT, pooling="mean", cache=tmp_path, stats=stats), reference)
    assert stats.cache_rejected == 1 and stats.texts_computed == 3


def test_states_are_the_same_bits_whatever_the_cache_holds(smollm, tmp_path):
    """A text list's states are a function of the list alone: a cache warmed by other lists (other tasks sharing texts,
    another batch size) is not read for them, so a warm run equals a cold one bit for bit."""
    texts = SHORT + LONG
    cold = embed_layers(smollm, texts, pooling="mean", cache=False)
    embed_layers(smollm, texts[:2], pooling="mean", cache=tmp_path)  # the same texts in other batches
    embed_layers(smollm, texts[::-1], pooling="mean", batch_size=2, cache=tmp_path)
    stats = CaptureStats()
    warm = embed_layers(smollm, texts, pooling="mean", cache=tmp_path, stats=stats)
    assert stats.cache_hits == 0 and stats.texts_computed == len(texts)
    np.testing.assert_array_equal(warm, cold)
    stats = CaptureStats()
    np.testing.assert_array_equal(embed_layers(smollm, texts, pooling="mean", cache=tmp_path, stats=stats), cold)
    assert stats.forward_passes == 0 and stats.cache_hits == len(texts)
    # Why the batch is part of the key: the same text in another batch differs in its last bits (SmolLM2, float32, CPU).
    alone = embed_layers(smollm, texts[:1], pooling="mean", cache=False)
    assert not np.array_equal(alone[:, 0], cold[:, 0])


def test_an_interrupted_capture_keeps_what_it_computed(minilm, tmp_path, monkeypatch):
    real_forward = batching._forward
    calls = []

    def dies_on_second_batch(handle, ids, mask, sites, through=None):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_forward(handle, ids, mask, sites, through)

    monkeypatch.setattr(batching, "_forward", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        embed_layers(minilm, SHORT + LONG, batch_size=2, cache=tmp_path)
    monkeypatch.setattr(batching, "_forward", real_forward)
    stats = CaptureStats()
    embed_layers(minilm, SHORT + LONG, batch_size=2, cache=tmp_path, stats=stats)
    assert stats.cache_hits == 2 and stats.texts_computed == 3


def test_duplicate_texts_are_computed_once(minilm):
    stats = CaptureStats()
    states = embed_layers(minilm, ["same", "same", "other"], cache=False, stats=stats)
    assert stats.texts_computed == 2
    np.testing.assert_array_equal(states[:, 0], states[:, 1])


def test_token_states_stream_and_average_to_the_mean_pooling(smollm):
    texts = SHORT + LONG[:1]
    pooled = embed_layers(smollm, texts, pooling="mean", cache=False)
    seen = set()
    for index, tokens in iter_token_states(smollm, texts, batch_size=2):
        n_tokens = len(smollm.tokenizer(texts[index])["input_ids"])
        assert tokens.shape == (31, n_tokens, 576) and tokens.dtype == np.float32
        scale = np.abs(pooled[:, index]).max()
        assert np.abs(tokens.mean(axis=1) - pooled[:, index]).max() / scale < 1e-5
        seen.add(index)
    assert seen == set(range(len(texts)))


def test_per_prompt_metrics_come_from_the_same_forward_pass_and_the_cache(smollm, tmp_path):
    """Token metrics add no forward pass, equal the metric on streamed token states, and are cached."""
    texts = SHORT + LONG[:1] + ["Hi"]
    kernels = {"prompt_entropy": metrics.prompt_entropies, "curvature": metrics.curvatures}
    plain, with_kernels = CaptureStats(), CaptureStats()
    pooled = embed_layers(smollm, texts, cache=False, stats=plain)
    captured = capture_layers(smollm, CaptureRequest(texts, cache=tmp_path, per_prompt=kernels, per_prompt_texts=[4, 0, 2, 4]), stats=with_kernels)
    assert with_kernels.forward_passes == plain.forward_passes and with_kernels.texts_computed == len(set(texts))
    np.testing.assert_array_equal(captured.pooled, pooled)
    tokens = dict(iter_token_states(smollm, texts))
    for column, index in enumerate([4, 0, 2, 4]):
        states = tokens[index]
        entropy = captured.per_prompt["prompt_entropy"][:, column]
        angle = captured.per_prompt["curvature"][:, column]
        if states.shape[1] >= 2:
            np.testing.assert_allclose(entropy, metrics.matrix_entropy(states), rtol=1e-5)
        else:
            assert np.isnan(entropy).all()
        if states.shape[1] >= 3:
            np.testing.assert_allclose(angle, metrics.curvature(states), rtol=1e-5)
        else:
            assert np.isnan(angle).all()

    stats = CaptureStats()
    again = capture_layers(smollm, CaptureRequest(texts, cache=tmp_path, per_prompt=kernels, per_prompt_texts=[4, 0, 2, 4]), stats=stats)
    assert stats.forward_passes == 0
    for name in kernels:
        np.testing.assert_array_equal(again.per_prompt[name], captured.per_prompt[name])
    # A kernel not cached yet for a text runs its batch again (here the only one, all five texts), once.
    stats = CaptureStats()
    capture_layers(smollm, CaptureRequest(texts, cache=tmp_path, per_prompt={"entropy2": lambda h, n: metrics.prompt_entropies(h, n, alpha=2.0)}, per_prompt_texts=[1]), stats=stats)
    assert stats.forward_passes == 1 and stats.texts_computed == len(set(texts))


def test_auto_batch_size_backs_off_on_out_of_memory(minilm, monkeypatch):
    real_forward = batching._forward
    sizes = []

    def small_device(handle, ids, mask, sites, through=None):
        sizes.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(handle, ids, mask, sites, through)

    texts = [f"sentence number {i} about something" for i in range(9)]
    reference = embed_layers(minilm, texts, cache=False)
    monkeypatch.setattr(batching, "_forward", small_device)
    stats = CaptureStats()
    backed_off = embed_layers(minilm, texts, cache=False, stats=stats)
    assert sizes[0] == 9 and max(stats.batch_sizes) <= 2 and sum(stats.batch_sizes) == 9
    np.testing.assert_allclose(backed_off, reference, atol=1e-5)


def test_an_explicit_batch_size_that_does_not_fit_is_a_user_error(minilm, monkeypatch):
    def no_memory(handle, ids, mask, sites, through=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(batching, "_forward", no_memory)
    with pytest.raises(UserError, match="out of memory at a batch of 4 texts"):
        embed_layers(minilm, SHORT + ["x"], batch_size=4, cache=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(texts=[]), "no texts to embed"),
        (dict(texts=["a"], pooling="max"), "unknown pooling 'max'"),
        (dict(texts=["a"], batch_size=0), "batch size must be a positive integer"),
        (dict(texts=["a"], max_length=0), "max_length must be a positive"),
    ],
)
def test_bad_capture_arguments_are_user_errors(minilm, kwargs, message):
    with pytest.raises(UserError, match=message):
        embed_layers(minilm, cache=False, **kwargs)
