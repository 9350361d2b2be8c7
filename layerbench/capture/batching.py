"""Forward passes in batches: texts tokenized once, sorted by length (longest first, so an out-of-memory error shows
up on the first batch rather than the last), packed into right-padded batches under a token budget, each run once
through the model's base module with every capture site's hooks (:mod:`layerbench.capture.sites`); the run's counters.
"""
from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from layerbench.capture.sites import check_sites, recording, site_stacks
from layerbench.choices import DEFAULT_SITE
from layerbench.config import progress_disabled
from layerbench.errors import UserError
from layerbench.models.loading import ModelHandle, available_memory

# Upper bound on texts per batch: beyond it CPU throughput stops improving and
# GPU batches only add latency to the first result.
MAX_AUTO_BATCH = 256
CPU_TOKEN_BUDGET = 1536
CPU_MAX_BATCH = 64


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


@contextmanager
def counting_passes(handle: ModelHandle, stats: CaptureStats) -> Iterator[None]:
    """Add to ``stats.forward_passes`` every call of the model's base module inside the block.

    The intervention families run the model themselves (prompts, patched
    continuations, every decoding step of a generation is one call); this is
    how their passes are counted, as the capture counts its batches.
    Back-patching's decoding steps run block by block
    (:mod:`layerbench.models.branching`), not as calls of the model, and are not counted.
    """
    calls = 0

    def count(*_: object) -> None:
        nonlocal calls
        calls += 1

    hook = handle.model.base_model.register_forward_pre_hook(count)
    try:
        yield
    finally:
        hook.remove()
        stats.forward_passes += calls


def resolve_max_length(handle: ModelHandle, max_length: int | None) -> int:
    """``max_length`` or the model's own limit (tokenizer's, else position embeddings)."""
    if max_length is not None:
        if max_length < 1:
            raise UserError(f"max_length must be a positive number of tokens, got {max_length}")
        return max_length
    limit = getattr(handle.tokenizer, "model_max_length", None)
    if limit is None or limit > 1_000_000:  # transformers' "no limit" sentinel is ~1e30
        limit = getattr(handle.model.config, "max_position_embeddings", None) or 2048
    return int(limit)


def tokenize(handle: ModelHandle, texts: Sequence[str], max_length: int) -> list[list[int]]:
    ids = handle.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    for text, row in zip(texts, ids):
        if len(row) == 0:
            raise UserError(f"text {text[:40]!r} has no tokens; drop empty texts from the data")
    return ids


def _pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
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


def _token_budget(handle: ModelHandle, n_sites: int = 1) -> int:
    """Tokens per batch for ``batch_size="auto"``.

    The captured states alone take (L+1)·D·4 bytes per token and site in
    float32; the model's own intermediates (attention, MLP) are a few times
    that. A quarter of free memory, divided by (9 + sites) times the
    per-token state size, leaves room for both; out-of-memory errors then halve it.
    """
    per_token = (handle.n_layers + 1) * handle.hidden_size * 4 * (9 + n_sites)
    budget = available_memory(handle.device) // 4 // per_token
    if handle.device.type == "cpu":
        # Measured on SmolLM2 with 20-token headlines: 39 texts/s at 32-64 per
        # batch, 30 at 128, 25 at 256; past ~1.5k tokens the batch's
        # intermediates fall out of the CPU caches.
        budget = min(budget, CPU_TOKEN_BUDGET)
    return max(int(budget), 1)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class _StopForward(Exception):
    """Raised by the hook on the last block a capture needs: the blocks after it are never run."""


def _forward(handle: ModelHandle, ids: torch.Tensor, mask: torch.Tensor, sites: Sequence[str], through: int | None = None) -> dict[str, list[torch.Tensor]]:
    """The token states of one batch at each site: site -> K tensors ``[B, T, D]`` (see :func:`site_stacks`).

    Runs the base module (``LlamaModel`` rather than ``LlamaForCausalLM``):
    the language-model head would compute vocabulary logits for every token,
    a fifth of SmolLM2's compute, that no capture reads.

    ``through`` = k < L runs blocks 1..k only: the states of layers 0..k are
    read by hooks (the input of block 1, the output of each block up to k),
    which are the very tensors ``hidden_states`` holds, and the forward stops
    there, so a capture of the first layers of a deep model costs k / L of its
    pass. The lists returned are then k + 1 long (k for ``mlp-input``).
    """
    kwargs = {"use_cache": False} if handle.is_causal else {}
    if through is None or through >= handle.n_layers:
        with torch.inference_mode(), recording(handle, sites) as recorder:
            out = handle.model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True, **kwargs)
            return site_stacks(handle, out.hidden_states, recorder.take(), sites)
    blocks = handle.anatomy.blocks
    hidden: list[torch.Tensor] = []

    def keep_input(_module, args, block_kwargs):
        hidden.append(args[0] if args else block_kwargs["hidden_states"])

    def keep_output(_module, _args, output):
        hidden.append(output[0] if isinstance(output, tuple) else output)
        if len(hidden) == through + 1:
            raise _StopForward

    hooks = [blocks[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
    hooks += [block.register_forward_hook(keep_output) for block in blocks[:through]]
    try:
        with torch.inference_mode(), recording(handle, sites) as recorder:
            try:
                handle.model.base_model(input_ids=ids, attention_mask=mask, **kwargs)
            except _StopForward:
                pass
            else:
                raise RuntimeError(f"the forward pass of {handle.name} did not reach block {through}")
            return site_stacks(handle, hidden, recorder.take(), sites, truncated=True)
    finally:
        for hook in hooks:
            hook.remove()


def plan_batches(token_ids: Sequence[Sequence[int]], batch_size: int | None, budget: int | None, max_batch: int) -> list[list[int]]:
    """The batches a capture runs: positions in ``token_ids``, longest texts first, each batch right-padded to its first text.

    A pure function of the token ids and the sizes, so that one text list is
    always batched the same way: a float's last bits depend on the batch a
    text shares (its padded width and the kernels its shape picks), and the
    cache keys each entry by its batch (:func:`batch_digest`).

    Args:
        token_ids: N token id lists.
        batch_size: texts per batch, or None to pack under ``budget``.
        budget: tokens per batch (padded), with ``batch_size`` None.
        max_batch: the most texts per batch under a budget.
    """
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))  # stable: ties keep the given order
    plan, start = [], 0
    while start < len(order):
        longest = len(token_ids[order[start]])
        size = min(max_batch, max(1, budget // longest)) if budget is not None else int(batch_size or 1)
        plan.append(order[start : start + size])
        start += size
    return plan


def batch_digest(batch: Sequence[Sequence[int]]) -> bytes:
    """sha256 of a batch's token id lists in batch order: the part of a cache key that says which batch computed an entry."""
    digest = hashlib.sha256()
    for ids in batch:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes() + b"\xff" * 8)  # -1 as int64 ends each text
    return digest.digest()


def _check_batch_size(batch_size: int | str) -> bool:
    """Whether ``batch_size`` is ``auto``; anything but a positive integer or ``auto`` is a :class:`UserError`."""
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")
    return batch_size == "auto"


def _max_batch(handle: ModelHandle) -> int:
    """The most texts a batch packed under a token budget may hold on the handle's device."""
    return CPU_MAX_BATCH if handle.device.type == "cpu" else MAX_AUTO_BATCH


def batch_plan(handle: ModelHandle, token_ids: Sequence[Sequence[int]], batch_size: int | str, n_sites: int) -> list[list[int]]:
    """:func:`plan_batches` with the handle's budget for ``batch_size="auto"``."""
    auto = _check_batch_size(batch_size)
    return plan_batches(token_ids, None if auto else int(batch_size), _token_budget(handle, n_sites) if auto else None, _max_batch(handle))


def iter_batches(
    handle: ModelHandle,
    texts: Sequence[str],
    batch_size: int | str = "auto",
    max_length: int | None = None,
    stats: CaptureStats | None = None,
    desc: str = "capture",
    sites: Sequence[str] = (DEFAULT_SITE,),
) -> Iterator[tuple[list[int], dict[str, list[torch.Tensor]], torch.Tensor]]:
    """Run every text through the model once, in the length-sorted right-padded batches of :func:`plan_batches`.

    Yields:
        ``(indices, states, mask)`` per batch: positions of the batch's texts
        in ``texts``, site -> the K ``[B, T, D]`` token states of that site's
        layers (K = L+1, or L for ``mlp-input``), and the ``[B, T]`` mask.

    ``batch_size="auto"`` packs batches under a token budget and halves it on
    an out-of-memory error; an explicit integer is used as given.
    """
    check_sites(handle, sites)
    _check_batch_size(batch_size)
    if not texts:
        return
    token_ids = tokenize(handle, texts, resolve_max_length(handle, max_length))
    yield from run_batches(handle, token_ids, batch_plan(handle, token_ids, batch_size, len(sites)), batch_size == "auto", stats, desc, sites)


def run_batches(
    handle: ModelHandle,
    token_ids: Sequence[Sequence[int]],
    plan: list[list[int]],
    auto: bool,
    stats: CaptureStats | None = None,
    desc: str = "capture",
    sites: Sequence[str] = (DEFAULT_SITE,),
    through: int | None = None,
) -> Iterator[tuple[list[int], dict[str, list[torch.Tensor]], torch.Tensor]]:
    """The forward pass of each batch of ``plan`` (positions in ``token_ids``), as :func:`iter_batches` yields them.

    With ``auto``, an out-of-memory error re-plans the batches not yet run
    under half the failed batch's tokens; otherwise it is a :class:`UserError`.
    ``through`` = k runs blocks 1..k only (:func:`_forward`).
    """
    stats = stats if stats is not None else CaptureStats()
    pad_id = handle.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    queue = deque(plan)
    with tqdm(total=sum(map(len, plan)), desc=desc, unit="text", disable=progress_disabled(), leave=False) as bar:
        while queue:
            chunk = queue[0]
            ids, mask = _pad([token_ids[i] for i in chunk], pad_id, handle.device)
            began = time.perf_counter()
            try:
                states = _forward(handle, ids, mask, sites, through)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                longest = max(len(token_ids[i]) for i in chunk)
                if not auto or len(chunk) == 1:
                    raise UserError(f"out of memory at a batch of {len(chunk)} texts of {longest} tokens; use a smaller --batch-size or --max-length") from exc
                del exc
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                rest = [i for batch in queue for i in batch]
                sub = plan_batches([token_ids[i] for i in rest], None, max(1, (len(chunk) // 2) * longest), _max_batch(handle))
                queue = deque([[rest[j] for j in batch] for batch in sub])
                continue
            queue.popleft()
            stats.forward_passes += 1
            stats.forward_seconds += time.perf_counter() - began
            stats.texts_computed += len(chunk)
            stats.batch_sizes.append(len(chunk))
            yield chunk, states, mask
            bar.update(len(chunk))

