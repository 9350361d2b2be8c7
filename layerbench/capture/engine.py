"""The one-pass capture engine: every layer of every text from a single forward pass.

Texts are tokenized once, sorted by length (longest first, so an
out-of-memory error shows up on the first batch rather than the last) and
packed into right-padded batches under a token budget. Each batch goes
through the model's base module once with ``output_hidden_states=True``;
every capture site asked for (:mod:`layerbench.capture.sites`) is read from
that one pass, and the pooled states of every layer are computed on the device
and written to the activation cache, so a later request for the same texts,
site and pooling runs no forward pass. On a GPU, batches are pipelined: while
the host scatters batch k's pooled states, the device already runs batch k+1.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from layerbench.capture.cache import ActivationCache, key_prefix, text_key
from layerbench.capture.pooling import pool_layers
from layerbench.capture.sites import check_sites, recording, site_layers, site_stacks
from layerbench.choices import DEFAULT_SITE, POOLINGS, unknown_choice
from layerbench.config import activation_cache_location, cache_dir, progress_disabled
from layerbench.config import memory_budget as config_memory_budget
from layerbench.errors import UserError
from layerbench.models.loading import ModelHandle, available_memory
from layerbench.storage import as_location

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


def _tokenize(handle: ModelHandle, texts: Sequence[str], max_length: int) -> list[list[int]]:
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


def _batch_plan(handle: ModelHandle, token_ids: Sequence[Sequence[int]], batch_size: int | str, n_sites: int) -> list[list[int]]:
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
    token_ids = _tokenize(handle, texts, resolve_max_length(handle, max_length))
    yield from run_batches(handle, token_ids, _batch_plan(handle, token_ids, batch_size, len(sites)), batch_size == "auto", stats, desc, sites)


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


PerPromptKernel = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(states [K, B, T, D] float32, lengths [B]) -> [K, B]``: a statistic of each prompt's token states at one site."""

# Part of the cache key of per-prompt statistics; bump when a kernel's numbers change.
PER_PROMPT_VERSION = 1


@dataclass
class SiteCapture:
    """What one pass produced at one capture site.

    Attributes:
        pooled: ``[K, N, D]``, the pooled states of every text: float32 in memory, or a float16
            ``np.memmap`` on disk when they exceed the memory budget (:func:`pooled_array`).
        layers: the layer number of each of the K rows (:func:`layerbench.capture.sites.site_layers`).
        per_prompt: kernel name -> float64 ``[K, P]``, that kernel on the
            token states of each of the P texts asked for (in the order asked).
    """

    pooled: np.ndarray
    layers: Sequence[int]
    per_prompt: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Capture:
    """What one pass over a set of texts produced: site -> :class:`SiteCapture`, in the order the sites were asked for."""

    sites: dict[str, SiteCapture]

    @property
    def pooled(self) -> np.ndarray:
        """``[K, N, D]`` pooled states of the first site asked for (the only one, usually)."""
        return next(iter(self.sites.values())).pooled

    @property
    def per_prompt(self) -> dict[str, np.ndarray]:
        """Per-prompt statistics of the first site asked for."""
        return next(iter(self.sites.values())).per_prompt


def pooled_array(shape: tuple[int, int, int], budget: int) -> np.ndarray:
    """Where a capture writes its pooled states ``[K, N, D]``: float32 in memory, or float16 on disk beyond ``budget`` bytes.

    The disk copy is an ``np.memmap`` under the cache folder's ``spill/``.
    Its file is unlinked as soon as it is mapped: the mapping keeps the space
    until the array (and every view of it) is garbage-collected, so a
    long-lived process (a Ray worker running task after task) leaves no
    files behind, nor does a crash. Where an open file cannot be unlinked
    (Windows), it is removed when the array is collected. float16 keeps 3
    significant digits and values up to 65,504 (far above the pooled states
    of the models here).
    """
    if 4 * int(np.prod(shape)) <= budget:
        return np.empty(shape, dtype=np.float32)
    folder = cache_dir() / "spill"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pooled-{os.getpid()}-{uuid.uuid4().hex}.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    try:
        path.unlink()
    except PermissionError:  # Windows: a mapped file stays until it is unmapped
        weakref.finalize(array, path.unlink, missing_ok=True)
    return array


def pooled_kind(site: str, pooling: str, subset: str = "") -> str:
    """The cache key kind of a site's pooled states (the residual site keeps the bare pooling name, as before sites existed);
    ``subset`` names a selection of layers (:func:`selected_layers`), empty for all."""
    return (pooling if site == DEFAULT_SITE else f"{site}/{pooling}") + subset


def _kernel_tag(site: str, name: str, subset: str = "") -> str:
    tag = f"per-prompt:v{PER_PROMPT_VERSION}:{name}"
    return (tag if site == DEFAULT_SITE else f"{tag}@{site}") + subset


def selected_layers(n_layers: int, site: str, wanted: Sequence[int] | None) -> tuple[Sequence[int], list[int], str]:
    """The layers a capture keeps at ``site``: (their numbers, their positions among the site's layers, the cache key's tag for them).

    ``wanted`` None keeps every layer (tag ""). A number beyond the model's L is a :class:`UserError`;
    ``mlp-input`` has no layer 0, so 0 is left out there.
    """
    every = site_layers(n_layers, site)
    if wanted is None:
        return every, list(range(len(every))), ""
    beyond = [layer for layer in wanted if layer > n_layers]
    if beyond:
        raise UserError(f"layer {beyond[0]} asked for; the model has layers 0..{n_layers}")
    numbers = [layer for layer in sorted(set(wanted)) if layer in every]
    if not numbers:
        raise UserError(f"none of layers {list(wanted)} is captured at site '{site}' (its layers are {every.start}..{every.stop - 1})")
    return numbers, [every.index(layer) for layer in numbers], "#layers=" + ",".join(map(str, numbers))


class _CacheWriter:
    """Writes a capture's cache entries into shards (:class:`ShardWriter`) in a background thread while the model computes the next batches.

    ``close`` waits for every write, closes the shard (renamed into place, then
    indexed) and raises the first write that failed (disk full), so an
    interrupted capture keeps each batch it finished and loses no error.
    """

    def __init__(self, store: ActivationCache | None, model: str) -> None:
        self._shards = store.writer(model) if store is not None else None
        self._pool = ThreadPoolExecutor(max_workers=1) if store is not None else None  # one thread: a shard is written in order
        self._writes: list[Future[None]] = []

    def put(self, key: str, value: np.ndarray) -> None:
        if self._shards is not None and self._pool is not None:
            self._writes.append(self._pool.submit(self._shards.put, key, value))

    def close(self) -> None:
        if self._pool is None or self._shards is None:
            return
        self._pool.shutdown(wait=True)
        try:
            for write in self._writes:
                write.result()
        except BaseException:
            self._shards.abandon()
            raise
        self._shards.close()


def _to_host(pooled: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.cuda.Event | None]:
    """Start copying a batch's pooled states ``{site: [K, B, D]}`` to the host; on a GPU the copy does not block.

    Returns the host tensors and the event to wait for before reading them (None on a CPU),
    so that the batch is finished one step later, while the GPU already runs the next forward.
    """
    if not any(tensor.is_cuda for tensor in pooled.values()):
        return pooled, None
    hosts = {}
    for site, tensor in pooled.items():
        hosts[site] = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        hosts[site].copy_(tensor, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return hosts, ready


@dataclass
class _CaptureJob:
    """One call of :func:`capture_layers`: its batches, which of them the cache holds, and where each state goes.

    Every distinct text is batched by :func:`plan_batches` over all of them,
    whatever the cache holds, and its entries are keyed by its batch: a
    batch is read whole from the cache or run whole. So a text's states are
    the same bits whether computed now or read, whatever the cache held and
    whichever task cached it (a text in another task's batch is another entry).

    Attributes:
        out: site -> ``[K, N, D]`` pooled states, filled from the cache and then batch by batch.
        unique: each distinct text -> its positions in the N texts (a repeated text is computed once).
        distinct: the distinct texts in first-seen order; ``token_ids`` their token ids.
        plan: the batches, as positions in ``distinct``; ``to_run``: those the cache lacks.
        prompt_values: (site, text) -> kernel name -> ``[K]`` per-prompt statistics found or computed.
    """

    texts: list[str]
    pooling: str
    layers: dict[str, Sequence[int]]
    subsets: dict[str, str]
    kernels: dict[str, PerPromptKernel]
    token_texts: set[str]
    store: ActivationCache | None
    prefix: bytes
    stats: CaptureStats
    out: dict[str, np.ndarray]
    token_ids: list[list[int]]
    plan: list[list[int]]
    unique: dict[str, list[int]]
    to_run: list[list[int]] = field(default_factory=list)
    prompt_values: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)

    @cached_property
    def distinct(self) -> list[str]:
        """The distinct texts in first-seen order (the keys of ``unique``)."""
        return list(self.unique)

    def _kinds(self, text: str) -> list[tuple[str, str, str | None, tuple[int, ...]]]:
        """The cache entries one text of this job needs: (kind, site, kernel name or None, shape)."""
        kinds: list[tuple[str, str, str | None, tuple[int, ...]]] = []
        for site, layers in self.layers.items():
            kinds.append((pooled_kind(site, self.pooling, self.subsets[site]), site, None, self.out[site][:, 0].shape))
            if text in self.token_texts:
                kinds += [(_kernel_tag(site, name, self.subsets[site]), site, name, (len(layers),)) for name in self.kernels]
        return kinds

    def read_cache(self) -> None:
        """Fill ``out`` and ``prompt_values`` from every batch the cache holds whole; list the others in ``to_run``.

        Every entry of every batch is looked up in one read of the cache (one open file per shard).
        """
        if self.store is None:
            self.to_run = list(self.plan)
            return
        wanted = []  # per batch: (key, text, site, kernel name or None, shape) of each entry it needs
        for batch in self.plan:
            context = batch_digest([self.token_ids[i] for i in batch])
            wanted.append([(text_key(self.prefix, kind, text, context), text, site, name, shape)
                           for text in (self.distinct[i] for i in batch) for kind, site, name, shape in self._kinds(text)])
        found, rejected = self.store.read(key for entries in wanted for key, *_ in entries)
        self.stats.cache_rejected += rejected  # present but truncated or corrupt: recomputed
        for batch, entries in zip(self.plan, wanted):
            if not all(key in found and found[key].shape == shape for key, _, _, _, shape in entries):
                self.to_run.append(batch)
                continue
            self.stats.cache_hits += len(entries)
            for key, text, site, name, _ in entries:
                if name is None:
                    self.out[site][:, self.unique[text]] = found[key][:, None, :]
                else:
                    self.prompt_values.setdefault((site, text), {})[name] = found[key]

    def store_batch(self, chunk: list[int], pooled: dict[str, torch.Tensor], ready: torch.cuda.Event | None, writer: _CacheWriter) -> None:
        """Scatter a batch's pooled states ``{site: [K, B, D]}`` of ``distinct[chunk]`` into ``out``; cache them and its kernels' values."""
        if ready is not None:
            ready.synchronize()
        firsts = [self.unique[self.distinct[idx]][0] for idx in chunk]
        context = batch_digest([self.token_ids[i] for i in chunk])
        for site, tensor in pooled.items():
            array = tensor.numpy()  # [K, B, D]
            self.out[site][:, firsts] = array
            for j, idx in enumerate(chunk):
                text = self.distinct[idx]
                writer.put(text_key(self.prefix, pooled_kind(site, self.pooling, self.subsets[site]), text, context), array[:, j].copy())
                for name, value in self.prompt_values.get((site, text), {}).items():
                    writer.put(text_key(self.prefix, _kernel_tag(site, name, self.subsets[site]), text, context), value)

    def run_kernels(self, chunk: list[int], site: str, per_layer: list[torch.Tensor], mask: torch.Tensor) -> None:
        """The per-prompt kernels on the token states (``K`` x ``[B, T, D]``) of the batch's texts that asked for them."""
        rows = [j for j, idx in enumerate(chunk) if self.distinct[idx] in self.token_texts]
        if not rows:
            return
        began = time.perf_counter()
        lengths = mask[rows].sum(dim=1)
        width = int(lengths.max())
        picked = torch.tensor(rows, device=mask.device)
        # [K, b, T, D] of the sampled prompts only; kernels go float64 chunk by chunk
        states = torch.stack([layer[picked, :width] for layer in per_layer]).to("cpu", torch.float32).numpy()
        real = lengths.cpu().numpy()
        values = {name: kernel(states, real) for name, kernel in self.kernels.items()}
        for j, row in enumerate(rows):
            self.prompt_values[(site, self.distinct[chunk[row]])] = {name: v[:, j].copy() for name, v in values.items()}
        self.stats.per_prompt_seconds += time.perf_counter() - began

    def result(self, per_prompt_texts: Sequence[int]) -> Capture:
        """The :class:`Capture`: repeated texts copied from their first position, kernels' values in the order asked."""
        captures = {}
        for site, layers in self.layers.items():
            for positions in self.unique.values():
                if len(positions) > 1:
                    self.out[site][:, positions[1:]] = self.out[site][:, positions[:1]]
            per_prompt_out = {
                name: np.stack([self.prompt_values[(site, self.texts[i])][name] for i in per_prompt_texts], axis=1) if len(per_prompt_texts) else np.empty((len(layers), 0))
                for name in self.kernels
            }
            captures[site] = SiteCapture(self.out[site], layers, per_prompt_out)
        return Capture(captures)


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
    sites: Sequence[str] = (DEFAULT_SITE,),
    layers: Sequence[int] | None = None,
) -> Capture:
    """Pooled states of every layer at every site for every text and, from the same forward pass, per-prompt statistics.

    Args:
        handle: from :func:`layerbench.load_model`.
        texts: N strings.
        pooling: ``mean`` over real tokens, ``last`` real token, or ``cls`` (position 0).
        batch_size: texts per forward pass, or ``"auto"``.
        max_length: truncate to this many tokens (default: the model's limit).
        cache: True for the default location (:func:`layerbench.config.activation_cache_location`),
            a folder or an fsspec URL for another, False for none.
        stats: counters to add this call's work to.
        per_prompt: name -> kernel run on the token states ``[K, B, T, D]``
            (float32, real tokens first, padding after ``lengths``) of the
            texts in ``per_prompt_texts``, at every site; token states are never
            stored, only the kernels' ``[K]`` values, which are cached like pooled states.
        per_prompt_texts: positions in ``texts`` that the kernels run on.
        memory_budget: bytes the pooled states of a site may take in memory (default:
            :func:`layerbench.config.memory_budget`); beyond it they go to a
            float16 ``np.memmap`` on disk (:func:`pooled_array`), and the
            label-free metrics stream over it.
        sites: capture sites (:mod:`layerbench.capture.sites`): ``residual``,
            ``normed``, ``mlp-input``; all come from the same forward passes.
        layers: keep only these layer numbers (None: all): the pooled states and kernels of the
            others are never computed nor held (:func:`selected_layers`), and the forward pass
            stops after the deepest of them.

    Returns:
        A :class:`Capture`, one :class:`SiteCapture` per site. At the
        ``residual`` site layer 0 is the embedding output and layer l the
        output of block l; decoders whose ``anatomy.norm_on_last_layer`` is
        true return layer L through the final norm (Hugging Face's
        convention), layers 0..L-1 are the raw residual stream.
    """
    if pooling not in POOLINGS:
        raise UserError(unknown_choice("pooling", pooling, POOLINGS))
    sites = list(dict.fromkeys(sites))
    check_sites(handle, sites)
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
    selection = {site: selected_layers(handle.n_layers, site, layers) for site in sites}
    kept = {site: positions for site, (_, positions, _) in selection.items()}
    budget = memory_budget if memory_budget is not None else config_memory_budget()
    unique: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        unique.setdefault(text, []).append(i)
    token_ids = _tokenize(handle, list(unique), length)
    job = _CaptureJob(
        texts=texts, pooling=pooling, layers={site: numbers for site, (numbers, _, _) in selection.items()},
        subsets={site: tag for site, (_, _, tag) in selection.items()}, kernels=kernels,
        token_texts={texts[i] for i in per_prompt_texts} if kernels else set(), store=store,
        prefix=key_prefix(handle.checkpoint.fingerprint, handle.tokenizer_fingerprint, length, numerics), stats=stats,
        out={site: pooled_array((len(kept[site]), len(texts), handle.hidden_size), budget) for site in sites},
        token_ids=token_ids, plan=_batch_plan(handle, token_ids, batch_size, len(sites)), unique=unique,
    )
    job.read_cache()
    writer = _CacheWriter(store, handle.name)
    pending: deque[tuple[list[int], dict[str, torch.Tensor], torch.cuda.Event | None]] = deque()
    try:
        # Layers asked for end before the last: the forward stops after the deepest one.
        through = max(max(numbers) for numbers, _, _ in selection.values()) if layers is not None else None
        batches = run_batches(handle, token_ids, job.to_run, batch_size == "auto", stats, desc=f"{handle.name} forward", sites=sites, through=through)
        for chunk, every, mask in batches:
            stacks = {site: [per_layer[i] for i in kept[site]] for site, per_layer in every.items()}
            del every
            pending.append((chunk, *_to_host({site: pool_layers(per_layer, mask, pooling) for site, per_layer in stacks.items()})))
            for site, per_layer in stacks.items():
                job.run_kernels(chunk, site, per_layer, mask)
            del stacks
            while len(pending) > 1:
                job.store_batch(*pending.popleft(), writer)
    finally:
        try:
            while pending:  # also after an interrupt: these batches are complete
                job.store_batch(*pending.popleft(), writer)
        finally:
            writer.close()
    return job.result(per_prompt_texts)


def embed_layers(
    handle: ModelHandle,
    texts: Sequence[str],
    pooling: str = "mean",
    batch_size: int | str = "auto",
    max_length: int | None = None,
    cache: bool | str | Path = True,
    stats: CaptureStats | None = None,
    site: str = DEFAULT_SITE,
) -> np.ndarray:
    """Pooled states of every layer of one capture site for every text: float32 ``[K, N, D]``.

    K is L+1 (layers 0..L) for ``residual`` and ``normed``, L (layers 1..L) for ``mlp-input``.
    :func:`capture_layers` without per-prompt statistics; see it for the arguments and layer convention.
    """
    return capture_layers(handle, texts, pooling, batch_size, max_length, cache, stats, sites=(site,)).pooled


def iter_token_states(
    handle: ModelHandle,
    texts: Sequence[str],
    batch_size: int | str = "auto",
    max_length: int | None = None,
    stats: CaptureStats | None = None,
    site: str = DEFAULT_SITE,
) -> Iterator[tuple[int, np.ndarray]]:
    """Token-level states of every layer of one site, one text at a time, streamed.

    Yields:
        ``(index, states)`` with ``states`` float32 ``[K, T_i, D]`` for
        ``texts[index]`` (its real tokens only), in length-sorted order. Only
        one batch is held in memory at a time.
    """
    for chunk, stacks, mask in iter_batches(handle, list(texts), batch_size, max_length, stats, desc=f"{handle.name} tokens", sites=(site,)):
        stacked = torch.stack(stacks[site]).float().cpu()  # one batch at a time
        counts = mask.sum(dim=1).tolist()
        for j, idx in enumerate(chunk):
            yield idx, stacked[:, j, : counts[j], :].numpy()
