"""Text generation for the intervention families: batched greedy and sampled continuations, and greedy decoding from a cache.

Batches of different prompts are left-padded; Hugging Face's ``generate``
derives position ids from the attention mask, so a prompt continues the same
way alone or in a padded batch (tested).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import StopStringCriteria, TopPLogitsWarper

from layerbench.config import progress_disabled
from layerbench.models.kv_cache import growing_cache
from layerbench.models.loading import ModelHandle


def ensure_padding(handle: ModelHandle) -> None:
    """Give the tokenizer a pad token (its EOS when it has none), so prompts can be batched."""
    tok = handle.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token


@contextmanager
def padded_on(handle: ModelHandle, side: str) -> Iterator[Any]:
    """The model's tokenizer, with a pad token (:func:`ensure_padding`) and padding on ``side`` (``left`` to generate,
    ``right`` to read positions), its own padding side restored afterwards; yields the tokenizer."""
    ensure_padding(handle)
    tok = handle.tokenizer
    before, tok.padding_side = tok.padding_side, side
    try:
        yield tok
    finally:
        tok.padding_side = before


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


# Rows of sampled continuations run in one forward pass: several seeded batches of prompts share the pass (each keeps
# its own random stream), so that the unembedding's weights are read once for more rows (benchmarks/bench_consistency.py).
SAMPLED_ROWS_PER_PASS = 160


def generate(handle: ModelHandle, prompts: list[str], max_new_tokens: int, *, batch_size: int = 16,
             sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, num_return_sequences: int = 1,
             seed: int = 0, stop_strings: list[str] | None = None, desc: str = "generate") -> list[list[str]]:
    """Continuations of ``prompts``: greedy, or ``num_return_sequences`` samples each (seeded per batch).

    The texts are those of Hugging Face's ``generate`` run on each batch of ``batch_size`` prompts, after
    ``torch.manual_seed(seed + index of the batch's first prompt)`` when sampling (tested); the work is less
    (:func:`decode_rows`): each prompt's prefill runs once for its copies, a row that has stopped leaves the batch,
    and sampled batches share forward passes (up to :data:`SAMPLED_ROWS_PER_PASS` rows), each drawing from its own
    generator seeded as ``generate``'s would be.

    Args:
        prompts: N prompt strings (tokenized with the tokenizer's special tokens).
        max_new_tokens: the most tokens generated after each prompt.
        sample: sample with ``temperature`` and ``top_p`` instead of taking the argmax.
        stop_strings: a sequence stops once its text contains one of these (kept in
            the text; what follows it is not generated), so a batch ends early.
        desc: the progress bar's label (prompts done of N).

    Returns:
        N lists of ``num_return_sequences`` continuations (the new text only; EOS and padding dropped).
    """
    batches = list(_batches(prompts, batch_size))
    rows = batch_size * num_return_sequences
    per_pass = max(1, SAMPLED_ROWS_PER_PASS // rows) if sample else 1
    out: list[list[str]] = []
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=progress_disabled(), leave=False)
    with padded_on(handle, "left") as tok, bar:
        stops = _stop_criterion(tok, tuple(stop_strings)) if stop_strings else None
        for first in range(0, len(batches), per_pass):
            joined = batches[first : first + per_pass]
            chunk = [prompt for _, part in joined for prompt in part]
            enc = tok(chunk, return_tensors="pt", padding=True).to(handle.device)
            streams = None
            if sample:
                streams = [(len(part) * num_return_sequences, torch.Generator(handle.device).manual_seed(seed + start)) for start, part in joined]
            with torch.no_grad():
                ids = decode_rows(handle, enc["input_ids"], enc["attention_mask"], max_new_tokens, num_return_sequences,
                                  sampling=(temperature, top_p, streams) if streams else None, stops=stops)
            texts = tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [texts[i : i + num_return_sequences] for i in range(0, len(texts), num_return_sequences)]
            bar.update(len(chunk))
    return out


@functools.lru_cache(maxsize=8)
def _stop_criterion(tokenizer: Any, stop_strings: tuple[str, ...]) -> StopStringCriteria:
    """Hugging Face's stop-string check for a tokenizer (its tables take seconds to build for a 262k vocabulary: built once)."""
    return StopStringCriteria(tokenizer=tokenizer, stop_strings=list(stop_strings))


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """``TopPLogitsWarper(top_p)(None, scores)``, the same numbers, with numpy's vectorized sort instead of ``torch.sort``.

    The warper sorts each row ascending, takes the softmax of the sorted row and its running sum, and removes the
    tokens whose running sum is at most ``1 - top_p`` (never the largest). The running sum is monotone, so the
    removed tokens are the ``k`` smallest, and every token below the smallest kept value goes. Those sums depend on
    the order of the additions, so they are computed as the warper computes them, on the sorted row (the same
    values whichever sort made them); only the sort is faster (3x on a 262k vocabulary). A row whose ``k``-th and
    ``k+1``-th values tie cannot be cut by value: the warper itself filters it.

    Args:
        scores: ``[B, V]`` float32 logits (after temperature).

    Returns:
        ``[B, V]``: the scores with the removed tokens at ``-inf``.
    """
    if scores.device.type != "cpu":
        return TopPLogitsWarper(top_p)(None, scores)
    ordered = torch.from_numpy(np.sort(scores.numpy(), axis=-1))
    removed = (ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p))
    removed[:, -1] = False
    counts = removed.sum(-1)
    rows = torch.arange(scores.shape[0])
    smallest_kept = ordered[rows, counts]
    ties = (counts > 0) & (ordered[rows, (counts - 1).clamp(min=0)] == smallest_kept)
    filtered = scores.masked_fill(scores < smallest_kept[:, None], -float("inf"))
    if bool(ties.any()):
        filtered[ties] = TopPLogitsWarper(top_p)(None, scores[ties])
    return filtered


def decode_rows(handle: ModelHandle, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, copies: int = 1, *,
                sampling: tuple[float, float, list[tuple[int, torch.Generator]]] | None = None,
                stops: StopStringCriteria | None = None) -> torch.Tensor:
    """Token ids of ``copies`` continuations of each left-padded prompt, as ``generate`` returns them, with less work.

    Two things cost ``generate`` work that changes nothing. It repeats every prompt ``copies`` times before the
    prefill, so K samples of a long few-shot prompt pay its prefill K times: here the prompts run once, all but
    their last token, and the key/value cache is repeated K times. And it runs every row until the last one stops,
    feeding padding to the rows that have: here a row that stops (EOS, a stop string) leaves the batch and its
    cache (once a quarter of the batch has stopped, as each leave copies the cache), and the cache grows in place (:mod:`layerbench.models.kv_cache`) instead of being copied at every step.

    Sampling draws what ``generate`` draws. ``torch.multinomial`` with one sample draws one exponential variable
    per vocabulary entry of every row of its ``[B, V]`` matrix in turn, so each stream's rows that have stopped
    stay in its matrix (as a certain padding token, which ``generate`` writes there too) and every row still
    running meets the variables it would meet in ``generate``. Positions are the mask's running count, as
    ``generate`` derives them.

    Args:
        ids, mask: ``[N, S]`` left-padded prompt tokens and their attention mask.
        copies: continuations per prompt (rows ``n * copies .. n * copies + copies - 1`` continue prompt n).
        sampling: ``(temperature, top_p, streams)``: each stream is ``(rows, generator)``, consecutive rows that
            ``generate`` would have sampled as one batch from that generator; None: greedy.
        stops: Hugging Face's stop-string criterion (a row stops after the token that completes a stop string).

    Returns:
        ``[N * copies, S + T]`` tokens: the prompt, then each row's continuation, padded after it stopped.
    """
    model, tok = handle.model, handle.tokenizer
    pad = tok.pad_token_id
    eos = torch.tensor(_eos_ids(handle), device=ids.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    if copies > 1 and ids.shape[1] > 1:
        prefix = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], cache=growing_cache(model),
                       use_cache=True).cache
        prefix.batch_repeat_interleave(copies)
        ids, mask, positions = (t.repeat_interleave(copies, dim=0) for t in (ids, mask, positions))
        first = dict(input_ids=ids[:, -1:], position_ids=positions[:, -1:], cache=prefix)
    else:
        ids, mask, positions = (t.repeat_interleave(copies, dim=0) for t in (ids, mask, positions))
        first = dict(input_ids=ids, position_ids=positions, cache=growing_cache(model))
    padded = not bool(mask.all())  # generate drops an all-ones mask, and so the model takes its unmasked path
    out = model(**first, attention_mask=mask if padded else None, use_cache=True, logits_to_keep=1)
    cache, logits = out.cache, out.logits[:, -1].float()
    rows = ids.shape[0]
    cached = torch.arange(rows, device=ids.device)  # the rows in the cache, in its order
    running = torch.ones(rows, dtype=torch.bool, device=ids.device)  # per cached row: not stopped yet
    sequences, step_mask, next_position = ids, mask, positions[:, -1]
    for step in range(max_new_tokens):
        live = cached[running]
        tokens = torch.full((rows,), pad, dtype=ids.dtype, device=ids.device)
        if sampling is None:
            tokens[live] = logits[running].argmax(-1)
        else:
            tokens[live] = _sample(logits[running], live, rows, pad, *sampling)[live]
        sequences = torch.cat([sequences, tokens[:, None]], dim=-1)
        done = torch.isin(tokens[live], eos)
        if stops is not None:
            done |= stops(sequences[live], None)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        running[torch.nonzero(running).flatten()[done]] = False
        # A stopped row is dropped from the cache once a quarter of the cache has stopped: dropping copies every
        # layer's cache, which costs more than running a few stopped rows (on padding, as generate does) for a while.
        if int((~running).sum()) * 4 >= len(cached):
            keep = torch.nonzero(running).flatten()
            cache.batch_select_indices(keep)
            cached, running = cached[keep], running[keep]
        step_mask = torch.cat([step_mask, torch.ones_like(step_mask[:, :1])], dim=-1)
        next_position = next_position + 1
        out = model(input_ids=tokens[cached, None], attention_mask=step_mask[cached] if padded else None,
                    position_ids=next_position[cached, None], cache=cache, use_cache=True, logits_to_keep=1)
        cache, logits = out.cache, out.logits[:, -1].float()
    return sequences


def _sample(logits: torch.Tensor, live: torch.Tensor, rows: int, pad: int, temperature: float, top_p: float,
            streams: list[tuple[int, torch.Generator]]) -> torch.Tensor:
    """``[rows]`` sampled tokens (:func:`decode_rows`): the live rows' ``logits`` ``[n_live, V]`` warped as ``generate`` warps them
    (temperature, then top-p), each stream's rows drawn from its generator, the rows that stopped as padding."""
    scores = logits / temperature if temperature != 1.0 else logits
    if top_p < 1.0:
        scores = top_p_filter(scores, top_p)
    probs = torch.zeros(rows, logits.shape[-1], device=logits.device)
    probs[:, pad] = 1.0
    probs[live] = torch.softmax(scores, dim=-1)
    tokens = torch.full((rows,), pad, dtype=torch.long, device=logits.device)
    running = torch.zeros(rows, dtype=torch.bool, device=logits.device)
    running[live] = True
    start = 0
    for size, generator in streams:
        if bool(running[start : start + size].any()):  # generate stops drawing for a batch once every row of it has stopped
            tokens[start : start + size] = torch.multinomial(probs[start : start + size], num_samples=1, generator=generator).squeeze(1)
        start += size
    return tokens


def _eos_ids(handle: ModelHandle) -> list[int]:
    """The tokens that end a sequence, as ``generate`` reads them: the generation config's, else the tokenizer's."""
    eos = getattr(handle.model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = handle.tokenizer.eos_token_id
    return [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]


def greedy_from_cache(handle: ModelHandle, first_logits: torch.Tensor, cache, max_new_tokens: int,
                      decided: Callable[[str], bool]) -> list[str]:
    """Greedy continuations of B rows whose prompt is already in ``cache``, each stopped as soon as ``decided(text)``.

    The first token comes from ``first_logits``; every later step feeds the
    previous tokens of the rows still running and drops finished rows from the
    batch and the cache (a row finishes at EOS, at ``max_new_tokens``, or when
    ``decided`` says its text can no longer change the verdict).

    Args:
        first_logits: ``[B, V]`` next-token logits after the prompt.
        cache: the model's key/value cache holding the B prompts (modified in place).
        decided: whether a row's text so far settles its outcome (e.g. the answer has appeared).

    Returns:
        B continuation texts (shorter than ``max_new_tokens`` tokens where decided early).
    """
    tok = handle.tokenizer
    eos = tok.eos_token_id
    n_rows = first_logits.shape[0]
    tokens: list[list[int]] = [[] for _ in range(n_rows)]
    texts = [""] * n_rows
    running = torch.arange(n_rows)
    next_ids = first_logits.argmax(-1)
    for step in range(max_new_tokens):
        still = []
        for i, row in enumerate(running.tolist()):
            token = int(next_ids[i])
            if token == eos:
                continue
            tokens[row].append(token)
            texts[row] = tok.decode(tokens[row], skip_special_tokens=True)
            if not decided(texts[row]):
                still.append(i)
        if step == max_new_tokens - 1 or not still:
            break
        if len(still) < len(running):
            keep = torch.tensor(still)
            cache.batch_select_indices(keep.to(next_ids.device))
            running, next_ids = running[keep], next_ids[keep.to(next_ids.device)]
        with torch.no_grad():
            logits = handle.model(input_ids=next_ids.view(-1, 1), cache=cache, use_cache=True).logits[:, -1]
        next_ids = logits.argmax(-1)
    return texts
