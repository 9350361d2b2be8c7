"""Where a capture's states go: pooled arrays per site (in memory or spilled to disk), the activation cache read before
and written after the passes, the per-prompt kernels run on each batch, and the :class:`Capture` a call returns.
"""
from __future__ import annotations

import os
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from layerbench.capture.batching import CaptureStats, batch_digest
from layerbench.capture.cache import ActivationCache, text_key
from layerbench.capture.sites import site_layers
from layerbench.choices import DEFAULT_SITE
from layerbench.config import cache_dir
from layerbench.errors import UserError

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


class CacheWriter:
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


def to_host(pooled: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.cuda.Event | None]:
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
class CaptureJob:
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

    def store_batch(self, chunk: list[int], pooled: dict[str, torch.Tensor], ready: torch.cuda.Event | None, writer: CacheWriter) -> None:
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
