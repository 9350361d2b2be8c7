"""Capture sites: residual, normed and mlp-input from one forward pass, on every mapped family and the packaged models."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import SMALL, TEXTS, check_three_sites_in_one_pass
from transformers import (
    BertConfig,
    BertModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from layerbench import UserError, embed_layers
from layerbench.capture import CaptureRequest, CaptureStats, capture_layers
from layerbench.capture.sites import check_sites, recording, site_layers, site_stacks
from layerbench.models import get_anatomy


def _tiny(kind: str) -> tuple[torch.nn.Module, str]:
    """A 3-block random model of ``kind`` and the dotted name (inside a block) of the module whose output is the MLP's input."""
    torch.manual_seed(0)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=101, n_positions=64)).eval(), "ln_2"
    if kind == "gpt_neox":
        return GPTNeoXForCausalLM(GPTNeoXConfig(**SMALL)).eval(), "post_attention_layernorm"
    if kind == "bert":
        return BertModel(BertConfig(**{k: v for k, v in SMALL.items() if k != "num_key_value_heads"})).eval(), "attention.output"
    if kind == "gemma3":
        config = Gemma3TextConfig(**SMALL, head_dim=8, sliding_window=16)
        return Gemma3ForCausalLM(config).eval(), "pre_feedforward_layernorm"
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[kind]
    return model_cls(config_cls(**SMALL)).eval(), "post_attention_layernorm"


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma3", "gpt2", "gpt_neox", "bert"])
def test_each_family_maps_its_sites_to_the_modules_it_has(kind):
    model, norm_name = _tiny(kind)
    anatomy = get_anatomy(model)
    handle = SimpleNamespace(anatomy=anatomy, n_layers=anatomy.n_layers, name=kind)
    check_sites(handle, ["residual", "normed", "mlp-input"])
    reference = []
    hooks = [block.get_submodule(norm_name).register_forward_hook(lambda m, a, o: reference.append(o[0] if isinstance(o, tuple) else o))
             for block in anatomy.blocks]
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    with torch.inference_mode(), recording(handle, ["mlp-input"]) as recorder:
        base = model.base_model if kind != "bert" else model
        hidden = base(input_ids=ids, output_hidden_states=True).hidden_states
        stacks = {site: torch.stack(layers) for site, layers in site_stacks(handle, hidden, recorder.take(), ["residual", "normed", "mlp-input"]).items()}
    for h in hooks:
        h.remove()
    assert stacks["residual"].shape == (4, 1, 5, 32) and stacks["mlp-input"].shape == (3, 1, 5, 32)
    # mlp-input is the output of the norm the family puts before its MLP (Jin et al. trace post_attention_layernorm in Llama).
    torch.testing.assert_close(stacks["mlp-input"], torch.stack(reference), atol=0, rtol=0)
    if anatomy.post_layer_norm:
        torch.testing.assert_close(stacks["normed"], stacks["residual"], atol=0, rtol=0)
    else:
        # Every layer through the final norm; layer L is Hugging Face's last entry, which already carries it.
        torch.testing.assert_close(stacks["normed"][:-1], anatomy.final_norm(torch.stack(hidden[:-1])), atol=0, rtol=0)
        torch.testing.assert_close(stacks["normed"][-1], hidden[-1], atol=0, rtol=0)
    assert list(site_layers(3, "mlp-input")) == [1, 2, 3] and list(site_layers(3, "normed")) == [0, 1, 2, 3]


def test_unknown_or_unmapped_sites_are_user_errors(minilm):
    with pytest.raises(UserError, match="unknown capture site 'hidden'; use one of residual, normed, mlp-input"):
        embed_layers(minilm, TEXTS, site="hidden", cache=False)
    odd = SimpleNamespace(anatomy=SimpleNamespace(model_type="odd", mlps=None, final_norm=None, post_layer_norm=False), name="odd")
    with pytest.raises(UserError, match="site 'mlp-input' is not mapped for model type 'odd'"):
        check_sites(odd, ["mlp-input"])
    with pytest.raises(UserError, match="site 'normed' needs the final norm"):
        check_sites(odd, ["normed"])


@pytest.mark.parametrize("model_name", ["minilm", "smollm"])
def test_three_sites_come_from_one_pass_and_equal_one_site_captures(model_name, request):
    check_three_sites_in_one_pass(request.getfixturevalue(model_name))


def test_the_cache_keeps_sites_apart(minilm, tmp_path):
    first = CaptureStats()
    residual = embed_layers(minilm, TEXTS, cache=tmp_path, stats=first)
    normed_stats = CaptureStats()
    mlp = embed_layers(minilm, TEXTS, cache=tmp_path, stats=normed_stats, site="mlp-input")
    assert normed_stats.cache_hits == 0 and normed_stats.texts_computed == len(TEXTS)  # another site is another entry
    again = CaptureStats()
    captured = capture_layers(minilm, CaptureRequest(TEXTS, cache=tmp_path, sites=("residual", "mlp-input")), stats=again)
    assert again.forward_passes == 0 and again.cache_hits == 2 * len(TEXTS)
    np.testing.assert_array_equal(captured.sites["residual"].pooled, residual)
    np.testing.assert_array_equal(captured.sites["mlp-input"].pooled, mlp)
