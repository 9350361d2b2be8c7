"""Text generation for the intervention families: batched greedy and sampled continuations, and greedy decoding from a cache.

Batches of different prompts are left-padded; Hugging Face's ``generate``
derives position ids from the attention mask, so a prompt continues the same
way alone or in a padded batch (tested).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm.auto import tqdm

from layerbench.config import progress_disabled
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


def generate(handle: ModelHandle, prompts: list[str], max_new_tokens: int, *, batch_size: int = 16,
             sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, num_return_sequences: int = 1,
             seed: int = 0, stop_strings: list[str] | None = None, desc: str = "generate") -> list[list[str]]:
    """Continuations of ``prompts``: greedy, or ``num_return_sequences`` samples each (seeded per batch).

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
    out: list[list[str]] = []
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=progress_disabled(), leave=False)
    with padded_on(handle, "left") as tok, bar:
        for start, chunk in _batches(prompts, batch_size):
            enc = tok(chunk, return_tensors="pt", padding=True).to(handle.device)
            options = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if sample else dict(do_sample=False)
            if stop_strings:
                options |= dict(stop_strings=stop_strings, tokenizer=tok)
            if sample:
                torch.manual_seed(seed + start)
            with torch.no_grad():
                if num_return_sequences > 1 and enc["input_ids"].shape[1] > 1:
                    ids = _generate_from_shared_prefill(handle, enc, max_new_tokens, num_return_sequences, options)
                else:
                    ids = handle.model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                                                pad_token_id=tok.pad_token_id, **options)
            new = ids[:, enc["input_ids"].shape[1]:]
            texts = tok.batch_decode(new, skip_special_tokens=True)
            out += [texts[i : i + num_return_sequences] for i in range(0, len(texts), num_return_sequences)]
            bar.update(len(chunk))
    return out


def _generate_from_shared_prefill(handle: ModelHandle, enc, max_new_tokens: int, copies: int, options: dict) -> torch.Tensor:
    """``generate`` of ``copies`` sequences per prompt with each prompt's prefill computed once.

    Hugging Face's ``generate`` repeats every prompt ``copies`` times before
    the prefill, so K samples of a long few-shot prompt pay its prefill K
    times. Here the prompts (left-padded) run once, all but their last token,
    the key/value cache is repeated K times, and ``generate`` continues from it
    (it runs only the uncached last token, with positions from the mask).
    """
    ids, mask = enc["input_ids"], enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = handle.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], use_cache=True).past_key_values
    cache.batch_repeat_interleave(copies)
    return handle.model.generate(input_ids=ids.repeat_interleave(copies, dim=0), attention_mask=mask.repeat_interleave(copies, dim=0),
                                 past_key_values=cache, max_new_tokens=max_new_tokens, pad_token_id=handle.tokenizer.pad_token_id, **options)


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
            logits = handle.model(input_ids=next_ids.view(-1, 1), past_key_values=cache, use_cache=True).logits[:, -1]
        next_ids = logits.argmax(-1)
    return texts
