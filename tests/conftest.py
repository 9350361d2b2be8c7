"""Shared fixtures: offline Hub, a per-session cache folder, and the two packaged models."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub, which reads these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TQDM_DISABLE"] = "1"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # the local Ray cluster of tests/test_ray.py must not reach out


def _session_cache() -> str:
    """A cache folder for this test session, removed at exit.

    Activations stay private to the session (tests count forward passes), but
    ``models/`` links to ``.cache/models`` in the checkout, so the packaged
    SmolLM2 GGUF is dequantized once per checkout, not once per session.
    """
    folder = Path(tempfile.mkdtemp(prefix="layerbench-test-cache-"))
    models = Path(__file__).resolve().parents[1] / ".cache" / "models"
    models.mkdir(parents=True, exist_ok=True)
    (folder / "models").symlink_to(models, target_is_directory=True)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return str(folder)


os.environ["LAYERBENCH_CACHE"] = _session_cache()

import pytest  # noqa: E402
import torch  # noqa: E402

from layerbench import load_model  # noqa: E402


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide), float32 on the CPU."""
    return load_model("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="session")
def smollm():
    """The packaged SmolLM2-135M-Instruct Q4_1, dequantized (Llama, 30 layers, 576 wide)."""
    return load_model("smollm2-135m-q4", device="cpu")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A 3-block random Llama checkpoint folder with a word-level tokenizer of its 101 ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4,
                         num_hidden_layers=3, vocab_size=101, max_position_embeddings=64)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    vocab = {f"w{i}": i for i in range(100)} | {"[UNK]": 100}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[UNK]").save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> tuple[Path, str]:
    """`layerbench run` of the quick suite on both packaged models, once per session: its results folder and its stdout.

    The end-to-end tests read it (tests/test_cli.py) or compare against it (tests/test_ray.py)
    instead of each running the same suite again. Tests that write copy the folder first.
    """
    import contextlib
    import io

    from layerbench.cli import main

    out = tmp_path_factory.mktemp("quick") / "results"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["run", "-m", "minilm-l6", "-m", "smollm2-135m-q4", "--suite", "quick", "-o", str(out), "--quiet"])
    assert code == 0, printed.getvalue()
    return out, printed.getvalue()
