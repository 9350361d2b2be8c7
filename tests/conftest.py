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
# Layers are evaluated in this process unless a test asks for workers (tests/test_parallel.py): pytest-xdist already uses the cores.
os.environ.setdefault("LAYERBENCH_JOBS", "1")


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


def _share_the_cores() -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``), give each worker its share of the cores.

    Two workers that each start two torch (OpenMP) threads on two cores spin against
    each other and run slower than one; set before torch is imported, so that the
    subprocesses and Ray workers a test starts inherit it too.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, threads)


_share_the_cores()

import pytest
import torch

from layerbench import load_model


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide), float32 on the CPU."""
    return load_model("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="session")
def smollm():
    """The packaged SmolLM2-135M-Instruct Q4_1, dequantized (Llama, 30 layers, 576 wide)."""
    return load_model("smollm2-135m-q4", device="cpu")


@pytest.fixture(scope="session")
def gemma():
    """The packaged Gemma 3 270M base, Q4_K_M from four chunk packages, dequantized (18 layers, 640 wide)."""
    return load_model("gemma3-270m-base-q4", device="cpu")


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



# The modules that read the session's quick-suite run (the ``quick_run`` fixture below).
QUICK_RUN_MODULES = frozenset({"test_cli.py", "test_ray.py", "test_site.py"})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (``make test``), one worker runs a whole module, and one worker the modules of ``quick_run``.

    A module's fixtures then load a model once, and the quick-suite run is computed once.
    This is ``--dist loadfile`` with one merged scope, written as a scheduler because
    ``--dist loadgroup``'s ``xdist_group`` marks are silently ignored under pytest 9.2
    (pytest-dev/pytest-xdist#1386). Scopes go out largest first.
    """
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "quick-run" if Path(module).name in QUICK_RUN_MODULES else module

    return ModuleScheduling(config, log)
