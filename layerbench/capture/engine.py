"""The one-pass capture engine: every layer of every text from a single forward pass.

Texts are tokenized once, sorted by length (longest first, so an
out-of-memory error shows up on the first batch rather than the last) and
packed into right-padded batches under a token budget. Each batch goes
through the model's base module once with ``output_hidden_states=True``; the
pooled states of every layer are computed on the device and written to the
activation cache, so a later request for the same texts and pooling runs no
forward pass. On a GPU, batches are pipelined: while the host scatters batch
k's pooled states, the device already runs batch k+1.
"""
from __future__ import annotations

import atexit
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from layerbench.capture.cache import ActivationCache, key_prefix, text_key
from layerbench.capture.pooling import POOLINGS, pool_layers
from layerbench.config import activation_cache_location, cache_dir, progress_disabled
from layerbench.config import memory_budget as config_memory_budget
from layerbench.errors import UserError
from layerbench.storage import as_location
from layerbench.models.loading import ModelHandle, available_memory

# Upper bound on texts per batch: beyond it CPU throughput stops improving and
# GPU batches only add latency to the first result.
MAX_AUTO_BATCH = 256
CPU_TOKEN_BUDGET = 1536
CPU_MAX_BATCH = 64
# Threads writing cache files next to a GPU; file writes release the GIL.
CACHE_WRITERS = 4


@dataclass
class CaptureStats:
    """Counters one run accumulates across capture calls (goes into the manifest).

    ``forward_seconds`` is host time spent in forward calls; on a GPU, where
    kernels run asynchronously, it measures launching rather than computing.
    ``per_prompt_seconds`` is time spent in per-prompt metric kernels.
    """

    forward_passes: int = 0
    texts_computed: int = 0
    cache_hits: int = 0
    cache_rejected: int = 0
    forward_seconds: float = 0.0
    per_prompt_seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


def resolve_max_length(handle: ModelHandle, max_length: int | None) -> int:
    """``max_length`` or the model's own limit (tokenizer's, else position embeddings)."""
    if max_length is not None:
        if max_length < 1:
            raise UserError(f"max_length must be a positive number of tokens, got {max_length}")
        return max_length
    limit = getattr(handle.tokenizer, "model_max_length", None)
    if limit is None or limit > 1_000_000:  # transformers' "no limit" sentinel is ~1e30
        limit = getattr(handle.model.config, "max_position_embeddings", 2048)
    return int(limit)


def _tokenize(handle: ModelHandle, texts: Sequence[str], max_length: int) -> list[list[int]]:
    ids = handle.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    for text, row in zip(texts, ids):
        if len(row) == 0:
            raise UserError(f"text {text[:40]!r} has no tokens; drop empty texts from the data")
    return ids


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into ``[B, T]`` ids and mask tensors on ``device``.

    On a GPU the host tensors are pinned and copied without blocking, so the
    copy overlaps the previous batch's kernels.
    """
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max())
    mask = np.arange(width)[None, :] < lengths[:, None]
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    ids[mask] = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lengths.sum()))
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))
    if device.type == "cuda":
        return ids_t.pin_memory().to(device, non_blocking=True), mask_t.pin_memory().to(device, non_blocking=True)
    return ids_t.to(device), mask_t.to(device)


def _token_budget(handle: ModelHandle) -> int:
    """Tokens per batch for ``batch_size="auto"``.

    The captured states alone take (L+1)·D·4 bytes per token in float32; the
    model's own intermediates (attention, MLP) are a few times that. A quarter
    of free memory, divided by ten times the per-token state size, leaves
    room for both; out-of-memory errors then halve it.
    """
    per_token = (handle.n_layers + 1) * handle.hidden_size * 4 * 10
    budget = available_memory(handle.device) // 4 // per_token
    if handle.device.type == "cpu":
        # Measured on SmolLM2 with 20-token headlines: 39 texts/s at 32-64 per
        # batch, 30 at 128, 25 at 256; past ~1.5k tokens the batch's
        # intermediates fall out of the CPU caches.
        budget = min(budget, CPU_TOKEN_BUDGET)
    return max(int(budget), 1)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _forward(handle: ModelHandle, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All hidden states of one batch: a tuple of L+1 ``[B, T, D]`` tensors.

    Runs the base module (``LlamaModel`` rather than ``LlamaForCausalLM``):
    the language-model head would compute vocabulary logits for every token,
    a fifth of SmolLM2's compute, that no capture reads.
    """
    kwargs = {"use_cache": False} if handle.is_causal else {}
    with torch.inference_mode():
        out = handle.model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True, **kwargs)
    return out.hidden_states


def iter_batches(
    handle: ModelHandle,
    texts: Sequence[str],
    batch_size: int | str = "auto",
    max_length: int | None = None,
    stats: CaptureStats | None = None,
    desc: str = "capture",
) -> Iterator[tuple[list[int], tuple[torch.Tensor, ...], torch.Tensor]]:
    """Run every text through the model once, in length-sorted right-padded batches.

    Yields:
        ``(indices, hidden_states, mask)`` per batch: positions of the batch's
        texts in ``texts``, a tuple of L+1 ``[B, T, D]`` tensors, ``[B, T]`` mask.

    ``batch_size="auto"`` packs batches under a token budget and halves it on
    an out-of-memory error; an explicit integer is used as given.
    """
    stats = stats if stats is not None else CaptureStats()
    auto = batch_size == "auto"
    if not auto and (not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")
    if not texts:  # everything came from the cache
        return
    length = resolve_max_length(handle, max_length)
    token_ids = _tokenize(handle, texts, length)
    order = sorted(range(len(texts)), key=lambda i: -len(token_ids[i]))
    budget = _token_budget(handle) if auto else None
    max_batch = CPU_MAX_BATCH if handle.device.type == "cpu" else MAX_AUTO_BATCH
    pad_id = handle.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    start = 0
    with tqdm(total=len(texts), desc=desc, unit="text", disable=progress_disabled(), leave=False) as bar:
        while start < len(order):
            longest = len(token_ids[order[start]])
            size = min(max_batch, max(1, budget // longest)) if auto else batch_size
            chunk = order[start : start + size]
            ids, mask = _pad([token_ids[i] for i in chunk], pad_id, handle.device)
            began = time.perf_counter()
            try:
                hidden = _forward(handle, ids, mask)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                if not auto or size == 1:
                    raise UserError(f"out of memory at a batch of {size} texts of {longest} tokens; use a smaller --batch-size or --max-length") from exc
                del exc
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                budget = max(1, (size // 2) * longest)
                continue
            stats.forward_passes += 1
            stats.forward_seconds += time.perf_counter() - began
            stats.texts_computed += len(chunk)
            stats.batch_sizes.append(len(chunk))
            yield chunk, hidden, mask
            start += len(chunk)
            bar.update(len(chunk))


PerPromptKernel = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(states [L+1, B, T, D] float32, lengths [B]) -> [L+1, B]``: a statistic of each prompt's token states."""

# Part of the cache key of per-prompt statistics; bump when a kernel's numbers change.
PER_PROMPT_VERSION = 1


@dataclass
class Capture:
    """What one pass over a set of texts produced.

    Attributes:
        pooled: ``[L+1, N, D]``, the pooled states of every text: float32 in memory, or a float16
            ``np.memmap`` on disk when they exceed the memory budget (:func:`pooled_array`).
        per_prompt: kernel name -> float64 ``[L+1, P]``, that kernel on the
            token states of each of the P texts asked for (in the order asked).
    """

    pooled: np.ndarray
    per_prompt: dict[str, np.ndarray] = field(default_factory=dict)


def pooled_array(shape: tuple[int, int, int], budget: int) -> np.ndarray:
    """Where a capture writes its pooled states ``[L+1, N, D]``: float32 in memory, or float16 on disk beyond ``budget`` bytes.

    The disk copy is an ``np.memmap`` under the cache folder's ``spill/``,
    removed when the process exits. float16 keeps 3 significant digits and
    values up to 65,504 (far above the pooled states of the models here).
    """
    if 4 * int(np.prod(shape)) <= budget:
        return np.empty(shape, dtype=np.float32)
    folder = cache_dir() / "spill"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pooled-{os.getpid()}-{uuid.uuid4().hex}.npy"
    atexit.register(lambda: path.unlink(missing_ok=True))
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)


def capture_layers(
    handle: ModelHandle,
    texts: Sequence[str],
    pooling: str = "mean",
    batch_size: int | str = "auto",
    max_length: int | None = None,
    cache: bool | str | Path = True,
    stats: CaptureStats | None = None,
    per_prompt: Mapping[str, PerPromptKernel] | None = None,
    per_prompt_texts: Sequence[int] = (),
    memory_budget: int | None = None,
) -> Capture:
    """Pooled states of every layer for every text and, from the same forward pass, per-prompt statistics.

    Args:
        handle: from :func:`layerbench.load_model`.
        texts: N strings.
        pooling: ``mean`` over real tokens, ``last`` real token, or ``cls`` (position 0).
        batch_size: texts per forward pass, or ``"auto"``.
        max_length: truncate to this many tokens (default: the model's limit).
        cache: True for the default location (:func:`layerbench.config.activation_cache_location`),
            a folder or an fsspec URL for another, False for none.
        stats: counters to add this call's work to.
        per_prompt: name -> kernel run on the token states ``[L+1, B, T, D]``
            (float32, real tokens first, padding after ``lengths``) of the
            texts in ``per_prompt_texts``; token states are never stored,
            only the kernels' ``[L+1]`` values, which are cached like pooled states.
        per_prompt_texts: positions in ``texts`` that the kernels run on.
        memory_budget: bytes the pooled states may take in memory (default:
            :func:`layerbench.config.memory_budget`); beyond it they go to a
            float16 ``np.memmap`` on disk (:func:`pooled_array`), and the
            label-free metrics stream over it.

    Returns:
        A :class:`Capture`. Layer 0 is the embedding output, layer l the output
        of block l. For decoders whose ``anatomy.norm_on_last_layer`` is true,
        layer L carries the final norm (Hugging Face's convention); layers
        0..L-1 are the raw residual stream.
    """
    if pooling not in POOLINGS:
        raise UserError(f"unknown pooling '{pooling}'; use one of {', '.join(POOLINGS)}")
    texts = list(texts)
    if not texts:
        raise UserError("no texts to embed: the data set is empty")
    kernels = dict(per_prompt or {})
    stats = stats if stats is not None else CaptureStats()
    length = resolve_max_length(handle, max_length)
    store = None
    if cache:
        store = ActivationCache(activation_cache_location() if isinstance(cache, bool) else as_location(cache))
    numerics = str(handle.dtype) + (f"+{handle.quantization}" if handle.quantization else "")
    prefix = key_prefix(handle.checkpoint.fingerprint, handle.tokenizer_fingerprint, length, numerics)
    kernel_tags = {name: f"per-prompt:v{PER_PROMPT_VERSION}:{name}" for name in kernels}

    out = pooled_array((handle.n_layers + 1, len(texts), handle.hidden_size), memory_budget if memory_budget is not None else config_memory_budget())
    unique: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        unique.setdefault(text, []).append(i)
    token_texts = {texts[i] for i in per_prompt_texts} if kernels else set()
    prompt_values: dict[str, dict[str, np.ndarray]] = {}  # text -> kernel name -> [L+1]
    missing: list[str] = []
    pooled_missing: set[str] = set()

    def lookup(tag: str, text: str, shape: tuple[int, ...]) -> np.ndarray | None:
        if store is None:
            return None
        key = text_key(prefix, tag, text)
        hit = store.get(key)
        if hit is not None and hit.shape == shape:
            stats.cache_hits += 1
            return hit
        if store.exists(key):
            stats.cache_rejected += 1  # present but truncated or corrupt: recompute
        return None

    for text, positions in unique.items():
        hit = lookup(pooling, text, out[:, 0].shape)
        if hit is not None:
            out[:, positions] = hit[:, None, :]
        else:
            pooled_missing.add(text)
        if text in token_texts:
            found = {name: lookup(tag, text, (out.shape[0],)) for name, tag in kernel_tags.items()}
            if all(v is not None for v in found.values()):
                prompt_values[text] = found
        if text in pooled_missing or (text in token_texts and text not in prompt_values):
            missing.append(text)

    # Cache files are written by a few threads while the model computes the
    # next batches; the finally clause waits for them, so an interrupted run
    # keeps every batch it finished and a failed write (disk full) is raised.
    writers = CACHE_WRITERS if handle.device.type == "cuda" else 1  # on a CPU more writers only contend with torch
    writer = ThreadPoolExecutor(max_workers=writers) if store else None
    writes = []
    pending: deque[tuple[list[int], torch.Tensor, torch.cuda.Event | None]] = deque()

    def finish(chunk: list[int], pooled: torch.Tensor, ready: torch.cuda.Event | None) -> None:
        if ready is not None:
            ready.synchronize()
        array = pooled.numpy()  # [L+1, B, D]
        firsts = [unique[missing[idx]][0] for idx in chunk]
        out[:, firsts] = array
        if writer is not None:
            for j, idx in enumerate(chunk):
                if missing[idx] in pooled_missing:
                    writes.append(writer.submit(store.put, text_key(prefix, pooling, missing[idx]), array[:, j].copy()))

    def run_kernels(chunk: list[int], stacked: torch.Tensor, mask: torch.Tensor) -> None:
        rows = [j for j, idx in enumerate(chunk) if missing[idx] in token_texts and missing[idx] not in prompt_values]
        if not rows:
            return
        began = time.perf_counter()
        lengths = mask[rows].sum(dim=1)
        width = int(lengths.max())
        states = stacked[:, rows, :width].to("cpu", torch.float32).numpy()  # [L+1, b, T, D]; kernels go float64 chunk by chunk
        lengths = lengths.cpu().numpy()
        values = {name: kernel(states, lengths) for name, kernel in kernels.items()}
        for j, row in enumerate(rows):
            text = missing[chunk[row]]
            prompt_values[text] = {name: v[:, j].copy() for name, v in values.items()}
            if writer is not None:
                for name, tag in kernel_tags.items():
                    writes.append(writer.submit(store.put, text_key(prefix, tag, text), prompt_values[text][name]))
        stats.per_prompt_seconds += time.perf_counter() - began

    try:
        for chunk, hidden, mask in iter_batches(handle, missing, batch_size, length, stats, desc=f"{handle.name} forward"):
            stacked = torch.stack(hidden)
            del hidden
            pooled = pool_layers(stacked, mask, pooling)
            ready = None
            if pooled.is_cuda:
                # Copy into pinned memory without blocking and finish the batch
                # one step later, while the GPU already runs the next forward.
                host = torch.empty(pooled.shape, dtype=pooled.dtype, pin_memory=True)
                host.copy_(pooled, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record()
                pooled = host
            pending.append((chunk, pooled, ready))
            run_kernels(chunk, stacked, mask)
            del stacked
            while len(pending) > 1:
                finish(*pending.popleft())
    finally:
        try:
            while pending:  # also after an interrupt: these batches are complete
                finish(*pending.popleft())
        finally:
            if writer is not None:
                writer.shutdown(wait=True)
                for write in writes:
                    write.result()
    for positions in unique.values():  # repeated texts were computed once
        if len(positions) > 1:
            out[:, positions[1:]] = out[:, positions[:1]]
    per_prompt_out = {
        name: np.stack([prompt_values[texts[i]][name] for i in per_prompt_texts], axis=1) if len(per_prompt_texts) else np.empty((out.shape[0], 0))
        for name in kernels
    }
    return Capture(out, per_prompt_out)


def embed_layers(
    handle: ModelHandle,
    texts: Sequence[str],
    pooling: str = "mean",
    batch_size: int | str = "auto",
    max_length: int | None = None,
    cache: bool | str | Path = True,
    stats: CaptureStats | None = None,
) -> np.ndarray:
    """Pooled states of every layer for every text: float32 ``[L+1, N, D]``.

    :func:`capture_layers` without per-prompt statistics; see it for the arguments and layer convention.
    """
    return capture_layers(handle, texts, pooling, batch_size, max_length, cache, stats).pooled


def iter_token_states(
    handle: ModelHandle,
    texts: Sequence[str],
    batch_size: int | str = "auto",
    max_length: int | None = None,
    stats: CaptureStats | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Token-level states of every layer, one text at a time, streamed.

    Yields:
        ``(index, states)`` with ``states`` float32 ``[L+1, T_i, D]`` for
        ``texts[index]`` (its real tokens only), in length-sorted order. Only
        one batch is held in memory at a time.
    """
    for chunk, hidden, mask in iter_batches(handle, list(texts), batch_size, max_length, stats, desc=f"{handle.name} tokens"):
        stacked = torch.stack(hidden).float().cpu()  # one batch at a time
        counts = mask.sum(dim=1).tolist()
        for j, idx in enumerate(chunk):
            yield idx, stacked[:, j, : counts[j], :].numpy()
