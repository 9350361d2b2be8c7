"""Interventions at the speed of the forward pass: a pass resumed at any block, shared lower blocks, the greedy readout,
the growing cache and the faster sampler, each against the model's own computation."""
from __future__ import annotations

import pytest
import torch
from helpers import check_stack_resumes_bit_for_bit

from layerbench import load_model
from layerbench.evaluators import backpatch
from layerbench.evaluators.backpatch import e1_last_token, layer_pairs, sweep_query
from layerbench.families.backpatch import BackpatchSettings
from layerbench.models.generation import generate, padded_on, top_p_filter
from layerbench.models.greedy import GreedyReadout
from layerbench.models.kv_cache import growing_cache
from layerbench.models.residual import record_layers
from layerbench.models.stack import decoder_stack


def _tiny_checkpoint(folder, config_class: str, model_class: str, **options):
    """A random checkpoint of a small ``config_class`` with a word-level tokenizer of its 101 ids, loaded by load_model."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    config = getattr(transformers, config_class)(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                                                 num_hidden_layers=4, vocab_size=101, max_position_embeddings=64, **options)
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).save_pretrained(folder)
    vocab = {f"w{i}": i for i in range(100)} | {"[UNK]": 100}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[UNK]", eos_token="[UNK]").save_pretrained(folder)
    return load_model(str(folder), device="cpu")


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    return _tiny_checkpoint(tmp_path_factory.mktemp("qwen2"), "Qwen2Config", "Qwen2ForCausalLM")


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory):
    # Sliding and full layers alternate, with a window longer than the tests' sequences (as the packaged prompts are for Gemma 3's 512).
    return _tiny_checkpoint(tmp_path_factory.mktemp("gemma3"), "Gemma3TextConfig", "Gemma3ForCausalLM", head_dim=8, sliding_window=16,
                            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])


def test_a_pass_resumed_at_a_block_equals_the_full_pass_llama(smollm):
    check_stack_resumes_bit_for_bit(smollm)


def test_a_pass_resumed_at_a_block_equals_the_full_pass_qwen2(tiny_qwen2):
    assert decoder_stack(tiny_qwen2) is not None
    check_stack_resumes_bit_for_bit(tiny_qwen2)


def test_a_pass_resumed_at_a_block_equals_the_full_pass_gemma3(tiny_gemma3):
    stack = decoder_stack(tiny_gemma3)
    assert stack is not None and stack.rotary_by_layer_type and set(stack.layer_types) == {"sliding_attention", "full_attention"}
    check_stack_resumes_bit_for_bit(tiny_gemma3)


def test_an_architecture_the_loop_does_not_reproduce_keeps_the_models_forward(minilm):
    assert decoder_stack(minilm) is None


@pytest.mark.parametrize("prefilter", [True, False])
def test_the_greedy_readout_is_the_argmax_of_the_models_logits(smollm, prefilter):
    readout = GreedyReadout(smollm, prefilter=prefilter)
    ids = smollm.tokenizer(["The capital of France is", "Two plus two is four. Three plus"], return_tensors="pt", padding=True)["input_ids"]
    layers = list(range(smollm.n_layers + 1))
    with torch.no_grad(), record_layers(smollm, layers) as recorded:
        logits = smollm.model(input_ids=ids).logits
    last = recorded[smollm.n_layers][0].flatten(0, 1)  # every position: [B*T, D]
    assert torch.equal(readout.tokens(last), logits.flatten(0, 1).argmax(-1))
    # Intermediate layers read as if last (a patched row's states are anything): the bound still holds.
    middle = torch.cat([recorded[layer][0].flatten(0, 1) for layer in (5, 15, 25)])
    assert torch.equal(readout.tokens(middle), readout.logits(middle).argmax(-1))


def test_the_greedy_readouts_bound_covers_its_error_and_finds_near_ties():
    from types import SimpleNamespace

    from layerbench.models.anatomy import Anatomy

    torch.manual_seed(0)
    head = torch.nn.Linear(64, 5000, bias=False)
    anatomy = Anatomy("llama", torch.nn.ModuleList(), None, head, None, norm_on_last_layer=True)
    handle = SimpleNamespace(anatomy=anatomy, model=SimpleNamespace(config=SimpleNamespace()), name="toy")
    readout = GreedyReadout(handle, prefilter=True)
    x = torch.randn(300, 64) * 4
    # Near ties: token 7's row made a hair better than token 4999's for the first rows (bfloat16 cannot tell them apart).
    with torch.no_grad():
        head.weight[7] = head.weight[4999] * (1 + 1e-6)
        x[:50] = head.weight[4999] * 40
    readout = GreedyReadout(handle, prefilter=True)
    assert torch.equal(readout.tokens(x), readout.logits(x).argmax(-1))
    approx = torch.nn.functional.linear(x.bfloat16(), head.weight.bfloat16()).float()
    assert (approx - readout.logits(x)).abs().max() <= (4 * 2.0**-8 * x.norm(dim=-1) * head.weight.norm(dim=1).max()).min()


def test_the_growing_cache_gives_the_dynamic_caches_numbers_bit_for_bit(smollm):
    model = smollm.model
    ids = smollm.tokenizer(["A coin is heads up. Ann flips it. Is it still heads up?"], return_tensors="pt")["input_ids"]
    outputs = []
    for cache in (None, growing_cache(model)):
        with torch.no_grad():
            out = model(input_ids=ids, cache=cache, use_cache=True)
            cache = out.cache
            cache.batch_repeat_interleave(3)
            cache.batch_select_indices(torch.tensor([2, 0]))
            steps = [out.logits]
            token = out.logits[:, -1:].argmax(-1).expand(2, 1)
            for _ in range(3):
                out = model(input_ids=token, cache=cache, use_cache=True)
                steps.append(out.logits)
                token = out.logits[:, -1:].argmax(-1)
            cache.crop(-2)
            steps.append(model(input_ids=token, cache=cache, use_cache=True).logits)
        outputs.append(steps)
    for plain, growing in zip(*outputs):
        assert torch.equal(plain, growing)


def test_top_p_filter_equals_the_warper_ties_included():
    from transformers import TopPLogitsWarper

    torch.manual_seed(0)
    scores = torch.randn(6, 1000) * 3
    scores[1, :500] = -2.0  # a long tie in the removed tail
    scores[2] = torch.linspace(-5, 5, 1000).round()  # ties everywhere, the boundary among them
    scores[3, :] = 0.0  # all tied
    for top_p in (0.95, 0.5, 0.999):
        assert torch.equal(top_p_filter(scores, top_p), TopPLogitsWarper(top_p)(None, scores.clone()))


def test_sampled_batches_sharing_a_pass_draw_what_generate_draws_per_batch(smollm):
    prompts = ["Q: True or false? A coin is heads up. Ann flips it.\nA:", "The capital of France is", "Once upon a time"]
    ours = generate(smollm, prompts, max_new_tokens=12, batch_size=2, sample=True, temperature=0.7, top_p=0.95, num_return_sequences=3,
                    seed=5, stop_strings=["\n", "."])
    theirs = []
    with padded_on(smollm, "left") as tok:
        for start in (0, 2):  # generate on each batch of 2 prompts, seeded with seed + its first index
            enc = tok(prompts[start : start + 2], return_tensors="pt", padding=True)
            torch.manual_seed(5 + start)
            with torch.no_grad():
                new = smollm.model.generate(**enc, max_new_tokens=12, do_sample=True, temperature=0.7, top_p=0.95, top_k=0, num_return_sequences=3,
                                            pad_token_id=tok.pad_token_id, stop_strings=["\n", "."], tokenizer=tok)
            texts = tok.batch_decode(new[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            theirs += [texts[i : i + 3] for i in range(0, len(texts), 3)]
    assert ours == theirs
    assert len({text for texts in ours for text in texts}) > 3  # sampling, not one text


@pytest.mark.slow
def test_shared_lower_blocks_give_every_variant_the_text_of_plain_decoding(smollm, monkeypatch):
    # One query's sweep twice: the model's own forward for every row and step and the full logits (the way before),
    # and the shared lower blocks with the bounded readout: every continuation the same.
    from layerbench.data import load_packaged

    query = backpatch.queries_of(load_packaged("two-hop-queries", {"n": 4, "seed": 0}), "test")[1]
    prompt = query.composed(capitalize=True)
    positions = {"e1-last": e1_last_token(smollm, prompt, query.e1), "prompt-last": len(smollm.tokenizer(prompt)["input_ids"]) - 1}
    pairs = layer_pairs(smollm.n_layers, BackpatchSettings(layer_step=3, forward_patching=True))
    names = query.answers("e3")
    shared = sweep_query(smollm, prompt, positions, pairs, names, 10, 64, readout=GreedyReadout(smollm, prefilter=True))
    monkeypatch.setattr(backpatch, "decoder_stack", lambda handle: None)
    plain = sweep_query(smollm, prompt, positions, pairs, names, 10, 64, readout=GreedyReadout(smollm, prefilter=False))
    assert shared == plain and len(shared) == 2 * len(pairs)
    assert len(set(shared.values())) > 1
