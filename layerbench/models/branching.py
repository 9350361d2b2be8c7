"""Greedy decoding of many patched copies of one prompt, each block computed once per distinct input.

Back-patching writes a state into layer ``lt`` of row ``r`` at one prompt
position; below ``lt`` the row is the clean prompt. When the rows then
decode, a new token's blocks ``0..lt-1`` read only the clean prompt's keys and
values and the tokens generated so far, so two rows that have generated the
same tokens compute the same states there, whatever their patches. Rows are
therefore grouped, block by block, by the tokens they have generated: block
``b`` runs once for each row whose patch lies at or below it (``lt <= b``) and
once for each distinct generated prefix among the other rows. With the sweep's
pairs (``ls > lt``, so most rows patch low layers) this skips about a third of
the rows' blocks, more where rows generate alike (``benchmarks/bench_backpatch.py``
counts them).

Each block's key/value cache holds one row per such entry, in the order of
its layout (the rows that own the block, then the shared prefixes); when the
layout changes between steps (a prefix splits, a row stops) the cache's rows
are reordered, a copy that costs far less than the blocks it spares.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from layerbench.models.greedy import GreedyReadout
from layerbench.models.loading import ModelHandle
from layerbench.models.stack import DecoderStack

Entry = tuple[str, int]  # ("row", r): row r's own states; ("prefix", g): the states shared by the rows that generated prefix g


def greedy_branches(handle: ModelHandle, stack: DecoderStack, readout: GreedyReadout, cache: Any, first_tokens: torch.Tensor,
                    lowest_patched: torch.Tensor, position: int, max_new_tokens: int, decided: Callable[[str], bool],
                    tally: dict[str, int] | None = None) -> list[str]:
    """Greedy continuations of B rows of one prompt, each stopped as soon as ``decided(text)`` (or at EOS, or ``max_new_tokens``).

    Args:
        cache: the rows' key/value cache after the prompt (B rows at every layer; reordered in place).
        first_tokens: ``[B]`` each row's first token (from the prompt pass's logits).
        lowest_patched: ``[B]`` the first block whose states differ from the clean prompt's (the patch's target layer:
            blocks ``0..lt-1`` read the clean prompt).
        position: the position of the first generated token (the prompt's length).
        tally: where given, counts are added to it: ``steps``, ``row_blocks`` (live rows x blocks, what running every
            row through every block costs) and ``computed_blocks`` (the blocks' rows actually run).

    Returns:
        B continuation texts, as ``layerbench.models.generation.greedy_from_cache`` gives them.
    """
    tok = handle.tokenizer
    eos = tok.eos_token_id
    n_rows, n_blocks = len(first_tokens), stack.n_layers
    lowest = [int(b) for b in lowest_patched]
    tokens: list[list[int]] = [[] for _ in range(n_rows)]
    texts = [""] * n_rows
    layouts: list[list[Entry]] = [[("row", r) for r in range(n_rows)] for _ in range(n_blocks)]  # the prompt pass: every row its own
    prefix_of = [0] * n_rows  # 0: the prompt alone
    prefix_ids: dict[tuple[int, int], int] = {}
    live = list(range(n_rows))
    next_tokens = first_tokens.tolist()
    for step in range(max_new_tokens):
        still = []
        for r in live:
            if next_tokens[r] == eos:
                continue
            tokens[r].append(next_tokens[r])
            texts[r] = tok.decode(tokens[r], skip_special_tokens=True)
            if not decided(texts[r]):
                still.append(r)
        if step == max_new_tokens - 1 or not still:
            break
        parent = {r: prefix_of[r] for r in still}
        for r in still:
            prefix_of[r] = prefix_ids.setdefault((prefix_of[r], tokens[r][-1]), len(prefix_ids) + 1)
        live = still
        layouts = [_relayout(cache, block, layouts[block], live, lowest, prefix_of, parent) for block in range(n_blocks)]
        if tally is not None:
            for key, count in (("steps", 1), ("row_blocks", len(live) * n_blocks), ("computed_blocks", sum(map(len, layouts)))):
                tally[key] = tally.get(key, 0) + count
        last = _forward(stack, cache, layouts, live, lowest, prefix_of, tokens, position + step, first_tokens.device)
        for r, token in zip(live, readout.tokens(last).tolist()):
            next_tokens[r] = token
    return texts


def _relayout(cache: Any, block: int, before: list[Entry], live: list[int], lowest: list[int], prefix_of: list[int],
              parent: dict[int, int]) -> list[Entry]:
    """Block ``block``'s entries for this step (its own rows, then the prefixes of the rows above their patch), its cache reordered to match."""
    where = {entry: i for i, entry in enumerate(before)}
    own = [("row", r) for r in live if lowest[r] <= block]
    sources = [where[entry] for entry in own]
    prefixes: dict[Entry, None] = {}  # ordered, each prefix once
    for r in live:
        if lowest[r] > block and ("prefix", prefix_of[r]) not in prefixes:
            prefixes[("prefix", prefix_of[r])] = None
            # Its cache is its parent prefix's (after the prompt pass: any such row's, all equal to the clean prompt's).
            sources.append(where.get(("prefix", parent[r]), where.get(("row", r), -1)))
    if sources != list(range(len(before))):
        cache.layers[block].batch_select_indices(torch.tensor(sources, device=cache.layers[block].keys.device))
    return own + list(prefixes)


def _forward(stack: DecoderStack, cache: Any, layouts: list[list[Entry]], live: list[int], lowest: list[int], prefix_of: list[int],
             tokens: list[list[int]], position: int, device: torch.device) -> torch.Tensor:
    """One step: every block on its entries (each entry's newest token), then the last layer of every live row, ``[n_live, D]``."""
    first_of = {("prefix", prefix_of[r]): tokens[r][-1] for r in live} | {("row", r): tokens[r][-1] for r in live}
    ids = torch.tensor([[first_of[entry]] for entry in layouts[0]], device=device)
    states = stack.embed(ids)
    position_ids = torch.tensor([[position]], device=device)
    rotary = stack.position_embeddings(states, position_ids)
    for block in range(stack.n_layers):
        if block:
            states = states[_sources(layouts[block - 1], layouts[block], lowest, prefix_of, block)]
        states = stack.block(block, states, position_ids, cache, rotary)
    final = [("row", r) if lowest[r] < stack.n_layers else ("prefix", prefix_of[r]) for r in live]
    where = {entry: i for i, entry in enumerate(layouts[-1])}
    return states[torch.tensor([where[entry] for entry in final], device=device), 0]


def _sources(below: list[Entry], here: list[Entry], lowest: list[int], prefix_of: list[int], block: int) -> torch.Tensor:
    """For each entry of block ``block``, the entry of block ``block - 1`` whose output is its input (a row whose patch
    starts at this block reads its prefix's output)."""
    where = {entry: i for i, entry in enumerate(below)}
    index = [where[entry] if entry[0] == "prefix" or lowest[entry[1]] < block else where[("prefix", prefix_of[entry[1]])] for entry in here]
    return torch.tensor(index)
