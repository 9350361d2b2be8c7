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

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from layerbench.capture.batching import CaptureStats, batch_plan, iter_batches, resolve_max_length, run_batches, tokenize
from layerbench.capture.cache import ActivationCache, key_prefix
from layerbench.capture.pooling import pool_layers
from layerbench.capture.sites import check_sites
from layerbench.capture.store import CacheWriter, Capture, CaptureJob, PerPromptKernel, pooled_array, selected_layers, to_host
from layerbench.choices import DEFAULT_SITE, POOLINGS, unknown_choice
from layerbench.config import activation_cache_location
from layerbench.config import memory_budget as config_memory_budget
from layerbench.errors import UserError
from layerbench.models.loading import ModelHandle
from layerbench.storage import as_location


@dataclass(frozen=True)
class CaptureRequest:
    """What one capture is asked for: which texts, pooled how, at which sites and layers, with which per-prompt kernels.

    Attributes:
        texts: N strings.
        pooling: ``mean`` over real tokens, ``last`` real token, or ``cls`` (position 0).
        batch_size: texts per forward pass, or ``"auto"``.
        max_length: truncate to this many tokens (default: the model's limit).
        cache: True for the default location (:func:`layerbench.config.activation_cache_location`),
            a folder or an fsspec URL for another, False for none.
        sites: capture sites (:mod:`layerbench.capture.sites`): ``residual``,
            ``normed``, ``mlp-input``; all come from the same forward passes.
        layers: keep only these layer numbers (None: all): the pooled states and kernels of the
            others are never computed nor held (:func:`~layerbench.capture.store.selected_layers`), and the forward pass
            stops after the deepest of them.
        per_prompt: name -> kernel run on the token states ``[K, B, T, D]``
            (float32, real tokens first, padding after ``lengths``) of the
            texts in ``per_prompt_texts``, at every site; token states are never
            stored, only the kernels' ``[K]`` values, which are cached like pooled states.
        per_prompt_texts: positions in ``texts`` that the kernels run on.
        memory_budget: bytes the pooled states of a site may take in memory (default:
            :func:`layerbench.config.memory_budget`); beyond it they go to a
            float16 ``np.memmap`` on disk (:func:`~layerbench.capture.store.pooled_array`), and the
            label-free metrics stream over it.
    """

    texts: Sequence[str]
    pooling: str = "mean"
    batch_size: int | str = "auto"
    max_length: int | None = None
    cache: bool | str | Path = True
    sites: Sequence[str] = (DEFAULT_SITE,)
    layers: Sequence[int] | None = None
    per_prompt: Mapping[str, PerPromptKernel] | None = None
    per_prompt_texts: Sequence[int] = ()
    memory_budget: int | None = None


def capture_layers(handle: ModelHandle, request: CaptureRequest, stats: CaptureStats | None = None) -> Capture:
    """Pooled states of every layer at every site for every text and, from the same forward pass, per-prompt statistics.

    Args:
        handle: from :func:`layerbench.load_model`.
        request: what to capture (:class:`CaptureRequest`).
        stats: counters to add this call's work to.

    Returns:
        A :class:`Capture`, one :class:`SiteCapture` per site. At the
        ``residual`` site layer 0 is the embedding output and layer l the
        output of block l; decoders whose ``anatomy.norm_on_last_layer`` is
        true return layer L through the final norm (Hugging Face's
        convention), layers 0..L-1 are the raw residual stream.
    """
    pooling, batch_size, cache, layers, per_prompt_texts = request.pooling, request.batch_size, request.cache, request.layers, request.per_prompt_texts
    if pooling not in POOLINGS:
        raise UserError(unknown_choice("pooling", pooling, POOLINGS))
    sites = list(dict.fromkeys(request.sites))
    check_sites(handle, sites)
    texts = list(request.texts)
    if not texts:
        raise UserError("no texts to embed: the data set is empty")
    kernels = dict(request.per_prompt or {})
    stats = stats if stats is not None else CaptureStats()
    length = resolve_max_length(handle, request.max_length)
    store = None
    if cache:
        store = ActivationCache(activation_cache_location() if isinstance(cache, bool) else as_location(cache))
    numerics = str(handle.dtype) + (f"+{handle.quantization}" if handle.quantization else "")
    selection = {site: selected_layers(handle.n_layers, site, layers) for site in sites}
    kept = {site: positions for site, (_, positions, _) in selection.items()}
    budget = request.memory_budget if request.memory_budget is not None else config_memory_budget()
    unique: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        unique.setdefault(text, []).append(i)
    token_ids = tokenize(handle, list(unique), length)
    job = CaptureJob(
        texts=texts, pooling=pooling, layers={site: numbers for site, (numbers, _, _) in selection.items()},
        subsets={site: tag for site, (_, _, tag) in selection.items()}, kernels=kernels,
        token_texts={texts[i] for i in per_prompt_texts} if kernels else set(), store=store,
        prefix=key_prefix(handle.checkpoint.fingerprint, handle.tokenizer_fingerprint, length, numerics), stats=stats,
        out={site: pooled_array((len(kept[site]), len(texts), handle.hidden_size), budget) for site in sites},
        token_ids=token_ids, plan=batch_plan(handle, token_ids, batch_size, len(sites)), unique=unique,
    )
    job.read_cache()
    writer = CacheWriter(store, handle.name)
    pending: deque[tuple[list[int], dict[str, torch.Tensor], torch.cuda.Event | None]] = deque()
    try:
        # Layers asked for end before the last: the forward stops after the deepest one.
        through = max(max(numbers) for numbers, _, _ in selection.values()) if layers is not None else None
        batches = run_batches(handle, token_ids, job.to_run, batch_size == "auto", stats, desc=f"{handle.name} forward", sites=sites, through=through)
        for chunk, every, mask in batches:
            stacks = {site: [per_layer[i] for i in kept[site]] for site, per_layer in every.items()}
            del every
            pending.append((chunk, *to_host({site: pool_layers(per_layer, mask, pooling) for site, per_layer in stacks.items()})))
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
    return capture_layers(handle, CaptureRequest(texts, pooling, batch_size, max_length, cache, sites=(site,)), stats).pooled


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
