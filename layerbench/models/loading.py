"""Load a resolved checkpoint into a :class:`ModelHandle` on the requested device and dtype."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from layerbench.choices import DEVICES, DTYPES, unknown_choice
from layerbench.config import progress_disabled
from layerbench.errors import UserError
from layerbench.fingerprint import folder_bytes
from layerbench.models.anatomy import Anatomy, get_anatomy
from layerbench.models.resolve import Checkpoint, resolve_checkpoint


@dataclass
class ModelHandle:
    """A loaded model and everything the capture engine and evaluators need from it.

    Attributes:
        name: registry name, Hub id or folder name; also the results folder name.
        revision: the Hub revision asked for (None: default branch or not on the Hub).
        model: the ``transformers`` model, in eval mode.
        tokenizer: its tokenizer.
        anatomy: where its blocks, final norm and unembedding live.
        device: where inputs go (the embedding's device under ``device_map``).
        dtype: the dtype the weights were loaded in.
        checkpoint: the resolved files and their provenance.
        is_causal: a decoder with a language-model head (lenses and patching apply).
    """

    name: str
    revision: str | None
    model: Any
    tokenizer: Any
    anatomy: Anatomy
    device: torch.device
    dtype: torch.dtype
    checkpoint: Checkpoint
    is_causal: bool
    device_map: str | None = None
    quantization: str | None = None

    @property
    def n_layers(self) -> int:
        """Number of blocks L; captures have L + 1 layers (0 is the embedding output)."""
        return self.anatomy.n_layers

    @property
    def hidden_size(self) -> int:
        """Width D of the residual stream."""
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)

    @property
    def default_pooling(self) -> str:
        return self.checkpoint.pooling

    @cached_property
    def tokenizer_fingerprint(self) -> str:
        """:func:`tokenizer_fingerprint` of the tokenizer (the same whenever it is asked)."""
        return tokenizer_fingerprint(self.tokenizer)

    def provenance(self) -> dict[str, Any]:
        """What the run manifest records about the model."""
        return {
            "name": self.name,
            "revision": self.revision,
            "model_type": self.anatomy.model_type,
            "class": type(self.model).__name__,
            "n_layers": self.n_layers,
            "hidden_size": self.hidden_size,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "fingerprint": self.checkpoint.fingerprint,
            "tokenizer_sha256": self.tokenizer_fingerprint,
            "device": str(self.device),
            "device_map": self.device_map,
            "dtype": str(self.dtype).removeprefix("torch."),
            "final_norm_on_last_layer": self.anatomy.norm_on_last_layer,
            "prompts": self.checkpoint.prompts,
            **{f"copy_{k}": v for k, v in self.checkpoint.provenance.items()},
        }


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of a tokenizer's definition: vocabulary, merges, normalizer, pre-tokenizer, post-processor, special tokens.

    Padding and truncation are state, not definition: a batch padded or
    truncated through the tokenizer switches them on in the fast backend,
    and its ``to_str()`` then differs. The digest is taken on a copy with both
    off, so it neither changes after a padded batch nor differs from a
    freshly loaded tokenizer's.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow tokenizer: its vocabulary is its definition
        return hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()
    definition = type(backend).from_str(backend.to_str())
    definition.no_padding()
    definition.no_truncation()
    return hashlib.sha256(definition.to_str().encode()).hexdigest()


def resolve_device(device: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable explicit choice is a user error."""
    if device not in DEVICES:
        raise UserError(unknown_choice("device", device, DEVICES))
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asked for, but torch sees no Apple GPU; use --device cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, checkpoint_dtype: Any) -> torch.dtype:
    """``auto`` keeps the checkpoint's dtype on accelerators and uses float32 on the CPU.

    Half precision on the CPU is slow and loses accuracy for nothing, so it
    is only used there when asked for by name.
    """
    if dtype not in DTYPES:
        raise UserError(unknown_choice("dtype", dtype, DTYPES))
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cpu":
        return torch.float32
    if isinstance(checkpoint_dtype, str):
        checkpoint_dtype = getattr(torch, checkpoint_dtype, None)
    if checkpoint_dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return checkpoint_dtype if checkpoint_dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32


def available_memory(device: torch.device) -> int:
    """Bytes free on ``device`` (host RAM for the CPU and MPS)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with accelerate; without it, assume it fits
        return 1 << 62


def _check_fits(checkpoint: Checkpoint, dtype: torch.dtype, checkpoint_dtype: Any, device: torch.device) -> None:
    """Refuse, before loading, a model that cannot fit ``device`` in ``dtype``."""
    stored = getattr(torch, checkpoint_dtype) if isinstance(checkpoint_dtype, str) else checkpoint_dtype
    stored_bytes = torch.tensor([], dtype=stored or torch.float32).element_size()
    need = folder_bytes(checkpoint.path) * torch.tensor([], dtype=dtype).element_size() / stored_bytes
    have = available_memory(device)
    if need > 0.9 * have:
        gib = 1 << 30
        raise UserError(
            f"model '{checkpoint.name}' needs about {need / gib:.1f} GiB in {str(dtype).removeprefix('torch.')} "
            f"but {device} has {have / gib:.1f} GiB free; use --dtype bfloat16, --device-map auto, or a bigger device"
        )


def _is_causal(config: Any) -> bool:
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def load_model(
    name: str,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
) -> ModelHandle:
    """Load a model by registry alias, Hub id or local folder.

    Args:
        name: ``smollm2-135m-q4``, ``sentence-transformers/all-MiniLM-L6-v2``, a
            Hub id, a checkpoint folder or a ``.gguf`` file.
        revision: Hub branch, tag or commit.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``mps``.
        dtype: ``auto`` | ``float32`` | ``bfloat16`` | ``float16``.
        device_map: ``"auto"`` spreads a model too big for one device over all
            visible GPUs (and the CPU) with accelerate; None puts it on ``device``.

    Raises:
        UserError: for anything the user can fix (unknown model, no Hub, too big...).
    """
    return load_checkpoint(resolve_checkpoint(name, revision), device, dtype, device_map)


def load_checkpoint(checkpoint: Checkpoint, device: str = "auto", dtype: str = "auto", device_map: str | None = None,
                    quantization: str | None = None) -> ModelHandle:
    """Load an already resolved checkpoint (see :func:`load_model` for the arguments).

    ``quantization="int8"`` loads the linear layers in 8 bits with
    bitsandbytes (LLM.int8(); needs the package and a CUDA GPU).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if device_map not in (None, "auto"):
        raise UserError(f"unknown device map '{device_map}'; use 'auto' or leave it out")
    hf_logging.set_verbosity_error()  # keep "weights not used" notices out of our progress output
    if progress_disabled():
        hf_logging.disable_progress_bar()
    torch_device = resolve_device(device)
    config = AutoConfig.from_pretrained(checkpoint.path)
    checkpoint_dtype = getattr(config, "dtype", None)
    torch_dtype = resolve_dtype(dtype, torch_device, checkpoint_dtype)
    if device_map is None:
        _check_fits(checkpoint, torch_dtype, checkpoint_dtype, torch_device)

    extra = _converter_kwargs(checkpoint.path)
    if quantization is not None:
        extra |= quantization_kwargs(quantization, torch_device)
        device_map = device_map or "auto"
    is_causal = _is_causal(config)
    auto_class = AutoModelForCausalLM if is_causal else AutoModel
    # No warning is silenced here: the packaged models load without one (tests/test_models.py), and what transformers says of
    # another checkpoint (newly initialized weights, a config it patched) is for its user to read.
    if device_map is not None:
        model = auto_class.from_pretrained(checkpoint.path, dtype=torch_dtype, device_map=device_map, **extra)
        torch_device = model.get_input_embeddings().weight.device
    else:
        model = auto_class.from_pretrained(checkpoint.path, dtype=torch_dtype, **extra).to(torch_device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    except (OSError, ValueError) as exc:
        raise UserError(f"model '{checkpoint.name}' at {checkpoint.path} has no usable tokenizer ({str(exc).splitlines()[0]})") from None
    model.eval()
    handle = ModelHandle(
        name=checkpoint.name,
        revision=checkpoint.revision,
        model=model,
        tokenizer=tokenizer,
        anatomy=get_anatomy(model),
        device=torch_device,
        dtype=torch_dtype,
        checkpoint=checkpoint,
        is_causal=is_causal,
        device_map=device_map,
        quantization=quantization,
    )
    _ = handle.tokenizer_fingerprint  # taken now, from the tokenizer as loaded
    return handle


def _converter_kwargs(folder: Path) -> dict[str, Any]:
    """``from_pretrained`` arguments that a folder converted by layerbench records (``add_pooling_layer: false`` for
    an encoder with no pooler weights); none for any other folder."""
    source = Path(folder) / "layerbench-source.json"
    if not source.is_file():
        return {}
    return dict(json.loads(source.read_text()).get("from_pretrained", {}))


def quantization_kwargs(quantization: str, device: torch.device) -> dict[str, Any]:
    """``from_pretrained`` arguments for ``quantization``; a missing package or GPU is a :class:`UserError`."""
    if quantization != "int8":
        raise UserError(f"unknown quantization '{quantization}'; use 'int8'")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None or device.type != "cuda":
        raise UserError("int8 needs the bitsandbytes package and a CUDA GPU (pip install bitsandbytes; --device cuda)")
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
