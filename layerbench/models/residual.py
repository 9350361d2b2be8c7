"""Read and write the raw residual stream of a loaded model at any layer, and decode it with the logit lens.

Layer ``l`` follows the capture's convention: 0 is the input of block 0 (the
embedding output), ``l >= 1`` the output of block ``l``. Unlike Hugging Face's
``hidden_states``, layer ``L`` here is always the *raw* output of the last
block, before any final norm, because patching and the lens both need the
stream itself; the lens then applies the final norm once.

Everything is done with forward hooks on the blocks that :mod:`anatomy`
locates, so the same code serves every supported family without calling a
block's internals.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from layerbench.errors import UserError
from layerbench.models.generation import padded_on
from layerbench.models.loading import ModelHandle


def _hook_point(handle: ModelHandle, layer: int) -> tuple[nn.Module, bool]:
    """The block whose input (``True``) or output (``False``) is ``layer``."""
    blocks = handle.anatomy.blocks
    if not 0 <= layer <= len(blocks):
        raise UserError(f"layer {layer} is outside 0..{len(blocks)} for model '{handle.name}'")
    return (blocks[0], True) if layer == 0 else (blocks[layer - 1], False)


@contextmanager
def record_layers(handle: ModelHandle, layers: list[int]) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record the residual stream at ``layers`` on every forward call inside the block.

    Yields:
        ``{layer: [tensor [B, T, D] per forward call]}``, filled as the model runs.
    """
    records: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    hooks = []
    for layer in layers:
        module, is_input = _hook_point(handle, layer)
        if is_input:
            def pre_hook(_module, args, kwargs, store=records[layer]):
                store.append((args[0] if args else kwargs["hidden_states"]).detach())

            hooks.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            def post_hook(_module, _args, output, store=records[layer]):
                store.append((output[0] if isinstance(output, tuple) else output).detach())

            hooks.append(module.register_forward_hook(post_hook))
    try:
        yield records
    finally:
        for h in hooks:
            h.remove()


@contextmanager
def patch_positions(handle: ModelHandle, target_layers: torch.Tensor, position: int, vectors: torch.Tensor) -> Iterator[None]:
    """Overwrite the residual stream of batch row ``b`` at layer ``target_layers[b]``, token ``position``, with ``vectors[b]``.

    The later blocks then read the patched state, as in activation patching.
    Rows with a negative target layer are left alone.

    Args:
        target_layers: ``[B]`` integer layers, one per batch row.
        position: the token index within the forward call's input (the same for every row).
        vectors: ``[B, D]`` states to write.
    """
    hooks = []
    for layer in sorted(set(target_layers.tolist()) - {-1}):
        module, is_input = _hook_point(handle, layer)
        rows = torch.nonzero(target_layers == layer).flatten()

        def write(stream: torch.Tensor, rows=rows) -> torch.Tensor:
            stream = stream.clone()
            stream[rows.to(stream.device), position] = vectors[rows].to(stream.device, stream.dtype)
            return stream

        if is_input:
            def pre_hook(_module, args, kwargs, write=write):
                if args:
                    return (write(args[0]), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": write(kwargs["hidden_states"])}

            hooks.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            def post_hook(_module, _args, output, write=write):
                if isinstance(output, tuple):
                    return (write(output[0]), *output[1:])
                return write(output)

            hooks.append(module.register_forward_hook(post_hook))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def lens_logits(handle: ModelHandle, states: torch.Tensor) -> torch.Tensor:
    """The logit lens: next-token logits read from raw residual states.

    ``logits = W_U · norm(h)``: the model's final norm (if it has one) and its
    unembedding applied to ``h`` as if ``h`` were the last layer's output
    (nostalgebraist 2020). At layer ``L`` this is exactly the model's own
    output.

    Args:
        states: ``[..., D]`` raw residual states.

    Returns:
        ``[..., V]`` float32 logits.

    Raises:
        UserError: the model has no unembedding (an encoder without a language-model head).
    """
    anatomy = handle.anatomy
    if anatomy.unembedding is None:
        raise UserError(f"model '{handle.name}' has no unembedding (language-model head); the logit lens needs one")
    weight = anatomy.unembedding.weight
    with torch.no_grad():
        h = states.to(weight.device, weight.dtype)
        if anatomy.final_norm is not None:
            h = anatomy.final_norm(h)
        return anatomy.unembedding(h).float()


def lens_statistics(handle: ModelHandle, states: torch.Tensor, targets: torch.Tensor, chunk: int = 64) -> dict[str, torch.Tensor]:
    """Per layer and item: where a target token ranks under the logit lens, its probability, and the lens entropy.

    Args:
        states: ``[L+1, N, D]`` raw residual states (one position per item).
        targets: ``[N]`` token ids.
        chunk: items decoded at once (memory is ``chunk * V`` floats per layer).

    Returns:
        ``rank`` (1 = the top token), ``prob`` (softmax probability, 0..1) and
        ``entropy`` (of the lens distribution, in nats), each ``[L+1, N]``.
    """
    n_layers, n = states.shape[:2]
    out = {key: torch.empty(n_layers, n) for key in ("rank", "prob", "entropy")}
    targets = targets.long()
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        logits = lens_logits(handle, states[:, start:stop])  # [L+1, c, V]
        log_p = torch.log_softmax(logits, dim=-1)
        target = targets[start:stop].to(logits.device).view(1, -1, 1).expand(n_layers, -1, 1)
        target_logit = logits.gather(-1, target)
        out["rank"][:, start:stop] = (logits > target_logit).sum(-1).float().cpu() + 1
        out["prob"][:, start:stop] = log_p.gather(-1, target).squeeze(-1).exp().cpu()
        out["entropy"][:, start:stop] = -(log_p.exp() * log_p).sum(-1).cpu()
    return out


def lens_masses(handle: ModelHandle, states: torch.Tensor, token_sets: list[list[torch.Tensor]], chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer and item: the logit lens's probability mass on each of K sets of tokens, and the entropy of its distribution.

    Args:
        states: ``[L+1, N, D]`` raw residual states (one position per item).
        token_sets: per item, K tensors of token ids (the tokens that begin a word in each of K languages).
        chunk: items decoded at once (memory is ``chunk * V`` floats per layer).

    Returns:
        ``mass`` ``[L+1, N, K]`` (the summed softmax probability of each set, 0..1) and ``entropy`` ``[L+1, N]`` (bits).
    """
    n_layers, n = states.shape[:2]
    k = len(token_sets[0]) if token_sets else 0
    mass, entropy = torch.zeros(n_layers, n, k), torch.empty(n_layers, n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        log_p = torch.log_softmax(lens_logits(handle, states[:, start:stop]), dim=-1)  # [L+1, c, V]
        p = log_p.exp()
        entropy[:, start:stop] = (-(p * log_p).sum(-1) / math.log(2.0)).cpu()
        for i in range(start, stop):
            for j, ids in enumerate(token_sets[i]):
                if len(ids):
                    mass[:, i, j] = p[:, i - start, ids.to(p.device)].sum(-1).cpu()
    return mass, entropy


def one_position_logits(model: nn.Module) -> dict[str, int]:
    """The forward argument that makes a causal LM compute its logits at one position only (``logits_to_keep=1``), where it takes
    one: a pass run for its hidden states skips the ``[N, T, V]`` logits (1.7 GB for 16 prompts of 100 tokens and Gemma's 262k vocabulary)."""
    import inspect

    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def last_token_states(handle: ModelHandle, prompts: list[str], batch_size: int = 16) -> torch.Tensor:
    """Raw residual states at each prompt's last token, every layer: ``[L+1, N, D]`` (right padding, so positions are the unpadded ones)."""
    layers = list(range(handle.n_layers + 1))
    parts = []
    with padded_on(handle, "right") as tok:
        for start in range(0, len(prompts), batch_size):
            enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(handle.device)
            last = enc["attention_mask"].sum(1) - 1
            with torch.no_grad(), record_layers(handle, layers) as recorded:
                handle.model(**enc, **one_position_logits(handle.model))
            rows = torch.arange(len(last), device=last.device)
            parts.append(torch.stack([recorded[layer][0][rows, last] for layer in layers]).float().cpu())
    return torch.cat(parts, dim=1)


def continuation_states(handle: ModelHandle, prefix: str, continuations: list[str], batch_size: int = 16) -> torch.Tensor:
    """Raw residual states at the last token of ``prefix + c`` for each continuation c, every layer: ``[L+1, C, D]``.

    The prefix is run once and its key/value cache copied to each batch of
    continuations, which then run only their own tokens: for C reasoning paths
    after one few-shot prompt this costs P + C·T token positions instead of
    C·(P + T). Tokens are those of the prefix followed by those of each
    continuation (tokenized without special tokens); a continuation that starts
    with a space tokenizes as it would inside the whole text (tested against
    :func:`last_token_states` on the full texts).
    """
    import copy

    layers = list(range(handle.n_layers + 1))
    parts = []
    with padded_on(handle, "right") as tok:
        prefix_ids = tok(prefix, return_tensors="pt")["input_ids"].to(handle.device)
        with torch.no_grad():
            cache = handle.model(input_ids=prefix_ids, use_cache=True, **one_position_logits(handle.model)).cache
        for start in range(0, len(continuations), batch_size):
            chunk = continuations[start : start + batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(handle.device)
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(chunk))
            mask = torch.cat([torch.ones(len(chunk), prefix_ids.shape[1], dtype=enc["attention_mask"].dtype, device=handle.device), enc["attention_mask"]], dim=1)
            last = enc["attention_mask"].sum(1) - 1  # right padding: the last real token of each continuation
            with torch.no_grad(), record_layers(handle, layers) as recorded:
                handle.model(input_ids=enc["input_ids"], attention_mask=mask, cache=batch_cache, use_cache=True, **one_position_logits(handle.model))
            rows = torch.arange(len(chunk), device=last.device)
            parts.append(torch.stack([recorded[layer][0][rows, last] for layer in layers]).float().cpu())
    return torch.cat(parts, dim=1)


def first_token_id(handle: ModelHandle, word: str) -> int:
    """The token a continuation starts ``word`` with (after a space, as it follows a prompt)."""
    return handle.tokenizer(" " + word, add_special_tokens=False)["input_ids"][0]
