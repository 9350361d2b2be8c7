"""Multi-hop back-patching (Biran et al. 2024, "Hopping Too Late").

For each two-hop query the evaluator runs the paper's five checks (first
hop, second hop, composition, and the entity and relation shortcuts), reads
every layer through the logit lens at the prompt's last token, and sweeps
patches: the residual state at a position from source layer ``ls`` is written
into target layer ``lt`` at the same position, and the model generates
greedily. ``ls > lt`` is back-patching; ``ls < lt`` (optional) forward patching.
A query counts as answered when a label or alias of the answer appears,
case-insensitively and as a whole word, in the greedy continuation.

Every protocol is its settings (:class:`~layerbench.families.backpatch.BackpatchSettings`):
the ``biran2024`` record sets the authors' code's prompt case (as written), answer
match (a substring of the continuation among the label and the aliases longer
than one character), first layer (the block outputs 1..L, their ``model.layers``
0..L-1) and relation-shortcut prompt. The oracle is reported for the initially
correct queries as well as the incorrect ones (``backpatch_success``, their
"Backpatching success" table).

Cost: one clean forward per query gives every source state and the key/value
cache. A patch at position ``p`` leaves every state before ``p`` unchanged,
so each variant re-runs only positions ``p..T-1`` on a copy of the cached
prefix; all (ls, lt) variants of a query and position run as one batch.
Decoding stops for a variant as soon as its verdict is settled (the answer
has appeared and is followed by a word boundary, or EOS); the verdict is
always read from the generated text, so results equal full generation for
every pair (``benchmarks/bench_backpatch.py`` checks this against the naive way).
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from layerbench.config import progress_disabled
from layerbench.data.dataset import TextDataset
from layerbench.data.two_hop import TwoHopQuery, capitalized, contains, mentions, parse_queries
from layerbench.errors import UserError
from layerbench.families import EvaluatorContext
from layerbench.families.backpatch import BackpatchSettings
from layerbench.models.branching import greedy_branches
from layerbench.models.generation import generate, greedy_from_cache
from layerbench.models.greedy import GreedyReadout
from layerbench.models.kv_cache import growing_cache
from layerbench.models.loading import ModelHandle
from layerbench.models.residual import first_token_id, last_token_states, lens_statistics, one_position_logits, patch_positions, record_layers
from layerbench.models.stack import decoder_stack
from layerbench.results.rows import layer_row, mean_row, summary_row

CHECKS = ("first_hop", "second_hop", "composition", "entity_shortcut", "relation_shortcut")
# Stands in for e1 in the relation-shortcut prompt: the composed relations with no entity to resolve.
PLACEHOLDER = "X"


def queries_of(data: TextDataset, task: str) -> list[TwoHopQuery]:
    """The two-hop queries of a task's data (its ``records``)."""
    if data.records is None:
        raise UserError(f"task '{task}': back-patching needs two-hop queries (data set 'two-hop-queries', or records with the fields of TwoHopQuery)")
    return parse_queries(data.records, f"task '{task}'")


def check_prompts(query: TwoHopQuery, settings: BackpatchSettings | None = None) -> dict[str, tuple[str, str]]:
    """The paper's five checks of a query: ``{check: (prompt, entity whose names count as correct)}``.

    ``first_hop``: r1 on e1 gives e2; ``second_hop``: r2 on e2 gives e3;
    ``composition``: the source prompt gives e3; ``entity_shortcut``: r2
    applied to e1 directly (skipping the bridge) gives e3;
    ``relation_shortcut``: the composed relations without the entity give
    e3 (the answer comes from the relations alone).

    Prompts are capitalized or as written (``prompt_case``); the relation shortcut puts a placeholder entity in the slot,
    or (``relation_shortcut: empty-slot``, where the query has r2's phrase) is built as Biran et al.'s
    ``evaluate_dataset.py`` builds it: r2's phrase around r1's phrase with an empty slot, its last four characters cut (" of ").
    """
    settings = settings or BackpatchSettings()
    capitalize = capitalized if settings.prompt_case == "capitalized" else (lambda text: text)
    if settings.relation_shortcut == "empty-slot" and query.r2_phrase is not None:
        relation = query.r2_phrase.format(query.r1_phrase.format(""))[:-4]
    else:
        relation = capitalize(query.r2_template.format(query.r1_phrase.format(PLACEHOLDER)))
    return {
        "first_hop": (capitalize(query.r1_template.format(query.e1)), "e2"),
        "second_hop": (capitalize(query.r2_template.format(query.e2)), "e3"),
        "composition": (query.composed(capitalize=settings.prompt_case == "capitalized"), "e3"),
        "entity_shortcut": (capitalize(query.r2_template.format(query.e1)), "e3"),
        "relation_shortcut": (relation, "e3"),
    }


def biran2024_prediction(text: str) -> str:
    """A continuation as Biran et al.'s ``decode_generated`` reads it (``utils.py``, ``patched_generation.py``): stripped, newlines
    turned into spaces, so that an answer broken over two lines ("New\nYork") is still found as a substring."""
    return text.strip().replace("\n", " ")


def biran2024_contains(text: str, names: list[str]) -> bool:
    """Biran et al.'s verdict: some answer is a substring of the prediction (:func:`biran2024_prediction`), ignoring case."""
    return contains(biran2024_prediction(text), names)


def settled(text: str, names: list[str], substring: bool = False) -> bool:
    """Whether more tokens can no longer change the verdict: a name has appeared (as a substring of Biran et al.'s prediction, or as a
    word followed by a non-word character)."""
    if substring:
        return biran2024_contains(text, names)
    return any(re.search(rf"(?<!\w){re.escape(name)}(?=\W)", text, flags=re.IGNORECASE) for name in names)


def answer_check(settings: BackpatchSettings):
    """``(names of an entity of a query, verdict of a text)`` under ``answer_match``: whole words over all names, or Biran et al.'s substrings."""
    if settings.answer_match == "substring":
        return (lambda q, entity: q.substring_answers(entity)), biran2024_contains
    return (lambda q, entity: q.answers(entity)), mentions


def e1_last_token(handle: ModelHandle, prompt: str, e1: str) -> int:
    """Index of the last token of ``e1``'s last occurrence in ``prompt`` (ignoring case), as the model tokenizes the prompt."""
    end = prompt.lower().rfind(e1.lower())
    if end < 0:
        raise UserError(f"entity '{e1}' does not occur in the prompt '{prompt}'")
    end += len(e1)
    offsets = handle.tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    return max(i for i, (start, stop) in enumerate(offsets) if start < end and stop > start)


def layer_pairs(n_layers: int, settings: BackpatchSettings) -> list[tuple[int, int]]:
    """(source, target) layer pairs of the sweep: ls > lt, plus ls < lt with forward patching; over every ``layer_step``-th layer and the last.

    From ``first_layer`` on: 0 (ours) includes the embedding output; 1 (Biran et al.'s) only the block outputs 1..L.
    """
    grid = sorted(set(range(settings.first_layer, n_layers + 1, settings.layer_step)) | {n_layers})
    return [(ls, lt) for lt in grid for ls in grid if ls > lt or (settings.forward_patching and ls < lt)]


def sweep_query(handle: ModelHandle, prompt: str, positions: dict[str, int], pairs: list[tuple[int, int]],
                names: list[str], max_new_tokens: int, batch_size: int, substring: bool = False,
                readout: GreedyReadout | None = None, tally: dict[str, int] | None = None) -> dict[tuple[str, int, int], str]:
    """Greedy continuations of ``prompt`` under every (position, ls, lt) patch.

    One clean pass gives every source state and the prompt's cache. A patch at position ``p`` leaves every state
    before ``p`` unchanged, so each batch of variants runs only positions ``p..T-1`` on a copy of the cached prefix,
    and then decodes with :func:`~layerbench.models.branching.greedy_branches`: a new token's blocks below a row's
    target layer are computed once per distinct generated prefix (where :func:`~layerbench.models.stack.decoder_stack`
    knows the architecture), and the greedy token comes from :class:`~layerbench.models.greedy.GreedyReadout`.

    A variant stops as soon as more tokens can no longer change its verdict, which :func:`settled` decides for both
    protocols: once a name has appeared in the text, as a whole word followed by a non-word character (ours: no later
    token can join that word, and a later token can only add text after it) or as a substring (Biran et al.'s, which
    only grows); at EOS or ``max_new_tokens``, generation stops anyway. Every verdict is read from the text.

    Args:
        positions: name -> token index ``p`` to patch at.
        pairs: (source layer, target layer) pairs.
        names: the answer's label and aliases (decoding of a variant stops once one is settled).
        batch_size: variants per prompt pass (the decoding runs every variant of the query in one batch).
        substring: names are found as substrings (Biran et al.), not as whole words.
        readout: the greedy readout to reuse across queries (made here when None).
        tally: counts of the decoding's work (:func:`~layerbench.models.branching.greedy_branches`), for benchmarks.

    Returns:
        ``{(position, ls, lt): continuation}``.
    """
    model = handle.model
    ids = handle.tokenizer(prompt, return_tensors="pt")["input_ids"].to(handle.device)
    length = ids.shape[1]
    n_layers = handle.n_layers
    with torch.no_grad(), record_layers(handle, list(range(n_layers + 1))) as recorded:
        clean = model(input_ids=ids, use_cache=True, **one_position_logits(model))
    states = torch.stack([recorded[layer][0][0] for layer in range(n_layers + 1)])  # [L+1, T, D]
    stack = decoder_stack(handle)
    readout = readout or GreedyReadout(handle)
    keys: list[tuple[str, int, int]] = []
    caches, logits, lowest = [], [], []
    for position, p in positions.items():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            sources = torch.tensor([ls for ls, _ in chunk])
            targets = torch.tensor([lt for _, lt in chunk])
            cache = prefix_cache(model, clean.cache, p, len(chunk))  # the states before p are the clean ones
            with torch.no_grad(), patch_positions(handle, targets, 0, states[sources, p]):
                result = model(input_ids=ids[:, p:].expand(len(chunk), -1), cache=cache, use_cache=True, **one_position_logits(model))
            keys += [(position, ls, lt) for ls, lt in chunk]
            caches.append(result.cache)
            logits.append(result.logits[:, -1])
            lowest.append(targets)
    # Every variant of the query decodes in one batch: the blocks run on more rows at once (a CPU's matrix products
    # cost less per row in larger batches), and rows of both positions share the blocks below their patch.
    cache, first = joined_cache(model, caches), torch.cat(logits)
    decided = lambda text: settled(text, names, substring)
    with torch.no_grad():
        if stack is None:
            texts = greedy_from_cache(handle, first, cache, max_new_tokens, decided)
        else:
            texts = greedy_branches(handle, stack, readout, cache, first.argmax(-1), torch.cat(lowest), length, max_new_tokens, decided, tally)
    return dict(zip(keys, texts))


def joined_cache(model: Any, caches: list[Any]) -> Any:
    """One growing cache (:mod:`~layerbench.models.kv_cache`) of the rows of ``caches`` in turn (all of one length)."""
    if len(caches) == 1:
        return caches[0]
    joined = growing_cache(model)
    for i, layer in enumerate(joined.layers):
        layer.update(torch.cat([c.layers[i].keys for c in caches]), torch.cat([c.layers[i].values for c in caches]))
    return joined


def prefix_cache(model: Any, clean: Any, p: int, rows: int) -> Any:
    """A growing cache (:mod:`~layerbench.models.kv_cache`) of ``rows`` copies of the clean cache's first ``p`` positions."""
    cache = growing_cache(model)
    if p > 0:
        for layer, source in zip(cache.layers, clean.layers):
            layer.update(source.keys[:, :, :p].expand(rows, -1, -1, -1), source.values[:, :, :p].expand(rows, -1, -1, -1))
    return cache


def _share_rows(metric: str, flags: np.ndarray, subset: str, layer: int | None = None, source_layer: int | None = None) -> dict:
    n = len(flags)
    value = float(flags.mean()) if n else float("nan")
    stderr = float(np.sqrt(value * (1 - value) / n)) if n > 1 else float("nan")
    return dict(metric=metric, layer=layer, source_layer=source_layer, value=value, stderr=stderr, n=n, higher_is_better=True, subset=subset)


def lens_rows(handle: ModelHandle, queries: list[TwoHopQuery], prompts: list[str], batch_size: int) -> list[dict]:
    """Per layer, where the answer (e3) and the bridge (e2) rank under the logit lens at each prompt's last token, and the lens entropy."""
    states = last_token_states(handle, prompts, batch_size)
    rows = []
    for entity, word in (("answer", "e3"), ("bridge", "e2")):
        targets = torch.tensor([first_token_id(handle, getattr(q, word)) for q in queries])
        stats = lens_statistics(handle, states, targets)
        for layer in range(states.shape[0]):
            rank, prob = stats["rank"][layer].numpy(), stats["prob"][layer].numpy()
            rows += [
                layer_row(f"lens_{entity}_rank", layer, np.median(rank), n=len(rank), higher_is_better=False),
                mean_row(f"lens_{entity}_prob", layer, prob, higher_is_better=True),
                mean_row(f"lens_{entity}_top1", layer, (rank == 1).astype(float), higher_is_better=True),
            ]
            if entity == "answer":
                entropy = stats["entropy"][layer].numpy()
                rows.append(mean_row("lens_entropy", layer, entropy, higher_is_better=None))
    return [r | {"subset": "prompt-last", "source_layer": None} for r in rows]


# Prompts per greedy batch of the checks: short prompts of one length, so a larger batch than generate's default
# amortizes each step's fixed cost (benchmarks/bench_backpatch.py).
CHECK_BATCH = 64


def run_checks(handle: ModelHandle, queries: list[TwoHopQuery], settings: BackpatchSettings) -> dict[str, np.ndarray]:
    """The five checks of every query: ``{check: [N] bool}`` (greedy continuations, batched with left padding)."""
    names_of, found = answer_check(settings)
    results = {}
    for check in CHECKS:
        prompts = [check_prompts(q, settings)[check] for q in queries]
        # Chains share hops ("The capital of France is" for every chain through France; 2,086 distinct prompts of the
        # 2,970 checks of the packaged set): each distinct prompt is generated once, in batches of prompts of one
        # length where possible, so that little of a batch is padding.
        distinct = sorted({prompt for prompt, _ in prompts}, key=lambda prompt: (len(handle.tokenizer(prompt)["input_ids"]), prompt))
        continuation = dict(zip(distinct, generate(handle, distinct, settings.max_new_tokens, batch_size=CHECK_BATCH, desc=f"{check} check")))
        results[check] = np.array([found(continuation[prompt][0], names_of(q, entity)) for q, (prompt, entity) in zip(queries, prompts)])
    return results


def evaluate_backpatch(context: EvaluatorContext) -> pd.DataFrame:
    """Checks, logit-lens rows and the back-patching sweep of a two-hop task.

    Returns:
        Rows (see docs/families/interventions.md): the checks' shares and
        the oracle fix rate at ``layer = -1``; lens rows per layer; one
        ``patched_correct`` row per (position and group, ls, lt) with
        ``layer = lt`` and ``source_layer = ls``.
    """
    handle, data, spec = context.handle, context.data, context.spec
    settings: BackpatchSettings = spec.settings
    queries = queries_of(data, spec.name)
    names_of, found = answer_check(settings)
    prompts = [check_prompts(q, settings)["composition"][0] for q in queries]
    checks = run_checks(handle, queries, settings)
    rows = [_share_rows(f"{check}_correct" if "shortcut" not in check else check, checks[check], "all") for check in CHECKS]
    rows += lens_rows(handle, queries, prompts, settings.batch_size)

    known = checks["first_hop"] & checks["second_hop"] & ~checks["entity_shortcut"] & ~checks["relation_shortcut"]
    swept = np.flatnonzero(known if settings.sweep == "known-hops" else np.ones(len(queries), bool))
    rows.append(summary_row("swept_queries", len(swept), n=len(queries), higher_is_better=None, source_layer=None, subset="all"))
    pairs = layer_pairs(handle.n_layers, settings)
    readout = GreedyReadout(handle)
    outcome: dict[tuple[str, int, int], list[bool]] = {}
    for i in tqdm(swept, desc=f"back-patching ({len(pairs)} layer pairs each)", unit="query", disable=progress_disabled(), leave=False):
        q, prompt = queries[i], prompts[i]
        positions = {}
        if "e1-last" in settings.positions:
            positions["e1-last"] = e1_last_token(handle, prompt, q.e1)
        if "prompt-last" in settings.positions:
            positions["prompt-last"] = len(handle.tokenizer(prompt)["input_ids"]) - 1
        names = names_of(q, "e3")
        substring = settings.answer_match == "substring"
        for key, text in sweep_query(handle, prompt, positions, pairs, names, settings.max_new_tokens, settings.batch_size, substring, readout).items():
            outcome.setdefault(key, []).append(found(text, names))
    was_right = checks["composition"][swept]
    for position in settings.positions:
        for group, members in (("was-wrong", ~was_right), ("was-right", was_right)):
            for ls, lt in pairs:
                flags = np.array(outcome.get((position, ls, lt), []), dtype=bool)
                rows.append(_share_rows("patched_correct", flags[members] if len(flags) else flags, f"{position}+{group}", layer=lt, source_layer=ls))
        back = [(ls, lt) for ls, lt in pairs if ls > lt]
        # Some back-patch (ls > lt) gives the answer: for a wrong query a fix, for a right one a kept answer.
        hit = np.array([any(outcome[(position, ls, lt)][k] for ls, lt in back) for k in range(len(swept))], dtype=bool) if len(swept) else np.zeros(0, bool)
        wrong = hit[~was_right] if len(swept) else hit
        rows.append(_share_rows("oracle_fix_rate", wrong, position))
        rows.append(summary_row("oracle_fixed", wrong.sum(), n=len(wrong), higher_is_better=True, source_layer=None, subset=position))
        for group, members in (("was-wrong", ~was_right), ("was-right", was_right)):
            rows.append(_share_rows("backpatch_success", hit[members] if len(swept) else hit, f"{position}+{group}"))
    frame = pd.DataFrame(rows)
    frame["source_layer"] = frame["source_layer"].astype("Int64")
    return frame
