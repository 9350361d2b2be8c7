"""What several test modules share: small test-model settings and texts, checks run on every packaged model (SmolLM2,
Gemma 3, multilingual-e5), the cross-platform tolerance of committed numbers, and a tokenizer left as it was found."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from layerbench import embed_layers
from layerbench.capture import CaptureRequest, CaptureStats, capture_layers
from layerbench.families import EvaluatorContext

# The 3-block configuration every tiny test model uses.
SMALL = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=3, vocab_size=101, max_position_embeddings=64, num_key_value_heads=4)

SHORT = ["The cat sat on the mat.", "Stocks fell sharply on Monday.", "Hi"]
LONG = [
    "A much longer sentence about the economy of France and its many regions, rivers and mountains, "
    "which goes on for a while so that the short texts in its batch get a lot of padding after them.",
    "Another long one: the committee met on Tuesday to discuss the budget, the schedule, the staffing "
    "plan and, after a lengthy debate that ran well into the evening, the location of the next meeting.",
]
TEXTS = ["The capital of France is Paris.", "A coin is heads up. Ka flips the coin.", "Hi", "Stocks fell sharply on Monday after the report."]

# How far a rerun on another x86-64 CPU may move a row, by the kind of row: measured as the committed results/ (MiniLM and
# SmolLM2, 20,321 rows) against `make demo` on an AMD EPYC (Zen 5) with the same packages (README, "Numbers across machines";
# benchmarks/bench_platform_spread.py): scores moved by at most 0.0083 (one item of a probe's fold), label-free metrics by at
# most 2.5e-4 of their value, and a concept depth's layer by 0.4 (one fold's peak moved two layers). Threshold-tuned
# diagnostics (pair classification's recall at its best threshold) move further and are left out.
SCORE_TOLERANCE, METRIC_RELATIVE_TOLERANCE, LAYER_TOLERANCE = 0.02, 1e-3, 1.0


@contextlib.contextmanager
def tokenizer_restored(handle: Any) -> Iterator[Any]:
    """The handle's tokenizer, its padding side and pad token put back afterwards (the model fixtures are shared by a module's tests)."""
    tok = handle.tokenizer
    side, pad = tok.padding_side, tok.pad_token
    try:
        yield tok
    finally:
        tok.padding_side, tok.pad_token = side, pad


def platform_tolerance(rows: pd.DataFrame) -> np.ndarray:
    """``[rows]``: the change a rerun on another CPU may make to each row (columns ``metric``, ``value``, ``n_layers``)."""
    from layerbench.metrics import list_metrics

    label_free = {info.name for info in list_metrics()}
    metric = rows.metric.astype(str)
    position = metric.str.endswith("_layer").to_numpy()
    depth = metric.str.endswith("_depth").to_numpy()
    relative = metric.isin(label_free).to_numpy()
    scale = np.maximum(np.abs(rows.value.to_numpy(np.float64)), 1.0)
    return np.select([position, depth, relative], [LAYER_TOLERANCE, LAYER_TOLERANCE / rows.n_layers.to_numpy(np.float64),
                                                   METRIC_RELATIVE_TOLERANCE * scale], SCORE_TOLERANCE)


def same_platform(folder: Path) -> bool:
    """Whether every run manifest under ``folder`` was written on this machine's platform (its fingerprint id)."""
    from layerbench.environment import platform_fingerprint

    here = platform_fingerprint()["id"]
    ids = {(json.loads(p.read_text()).get("environment", {}).get("platform_fingerprint") or {}).get("id") for p in folder.rglob("runs/*.json")}
    return ids == {here}


def check_padding_invariance(handle, pooling: str) -> None:
    """Each short text's layers alone equal its layers batched with long texts, within 1e-5 of each layer's scale."""
    batched = embed_layers(handle, SHORT + LONG, pooling=pooling, cache=False)
    for i, text in enumerate(SHORT):
        alone = embed_layers(handle, [text], pooling=pooling, cache=False)[:, 0]
        scale = np.abs(alone).max(axis=1, keepdims=True)
        assert (np.abs(batched[:, i] - alone) / scale).max() < 1e-5, (text, pooling)


def check_three_sites_in_one_pass(handle) -> None:
    """residual, normed and mlp-input captured together equal each captured alone, at a third of the passes."""
    together = CaptureStats()
    captured = capture_layers(handle, CaptureRequest(TEXTS, pooling="mean", cache=False, sites=("residual", "normed", "mlp-input")), stats=together)
    alone = CaptureStats()
    for site in ("residual", "normed", "mlp-input"):
        single = embed_layers(handle, TEXTS, "mean", cache=False, stats=alone, site=site)
        np.testing.assert_allclose(captured.sites[site].pooled, single, rtol=1e-5, atol=1e-6)
    assert together.forward_passes * 3 == alone.forward_passes and together.texts_computed == len(TEXTS)
    L = handle.n_layers
    assert captured.sites["mlp-input"].pooled.shape == (L, len(TEXTS), handle.hidden_size)
    assert list(captured.sites["mlp-input"].layers) == list(range(1, L + 1))
    residual, normed = captured.sites["residual"].pooled, captured.sites["normed"].pooled
    np.testing.assert_array_equal(residual[-1], normed[-1])
    if handle.anatomy.post_layer_norm:  # post-LN: every block output is already normed
        np.testing.assert_array_equal(residual, normed)
    else:  # RMSNorm changes every raw layer
        assert np.abs(residual[L // 2] - normed[L // 2]).max() > 1.0


def check_backpatch_rows(handle) -> None:
    """A back-patching sweep over every 10th layer on six queries gives complete, bounded rows."""
    from layerbench.data import load_packaged
    from layerbench.evaluators.backpatch import evaluate_backpatch
    from layerbench.results.schema import complete_rows
    from layerbench.specs.schema import TaskSpec

    L = handle.n_layers
    spec = TaskSpec(name="bp", family="backpatch", description="d", data={"source": "packaged", "dataset": "two-hop-queries"},
                    evaluator={"layer_step": 10, "sweep": "all", "max_new_tokens": 6}, main_score="oracle_fix_rate")
    from layerbench.capture import CaptureStats, counting_passes

    data = load_packaged("two-hop-queries", {"n": 6, "seed": 3})
    stats = CaptureStats()
    import warnings

    with counting_passes(handle, stats), warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        rows = complete_rows(evaluate_backpatch(EvaluatorContext(data, spec, 0, handle=handle)), model="m", revision=None, task="bp", subset="s", split="test", n_layers=L, run_id="r")
    # No library warning reaches a user that the current API avoids (transformers' past_key_values -> cache rename).
    stale = [str(w.message) for w in said if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not stale, stale
    # The run counts the passes the evaluator made: at least one clean and one patched pass per query and position.
    assert stats.forward_passes >= 6 * 3
    patched = rows[rows.metric == "patched_correct"]
    # layers 0, 10, 20, ..., L: every back-patch pair of them, two positions, two groups
    grid = len(set(range(0, L + 1, 10)) | {L})
    assert len(patched) == grid * (grid - 1) // 2 * 2 * 2 and (patched.source_layer > patched.layer).all()
    assert set(patched.subset) == {f"{p}+{g}" for p in ("e1-last", "prompt-last") for g in ("was-wrong", "was-right")}
    assert patched.groupby("subset").n.first().sum() == 2 * 6  # every swept query is in exactly one group per position
    summary = rows[rows.layer.isna()].set_index(["metric", "subset"]).value
    for check in ("first_hop_correct", "second_hop_correct", "composition_correct", "entity_shortcut", "relation_shortcut"):
        assert 0 <= summary[(check, "all")] <= 1
    assert summary[("swept_queries", "all")] == 6
    for position in ("e1-last", "prompt-last"):
        fixed, wrong = summary[("oracle_fixed", position)], rows[(rows.metric == "oracle_fixed") & (rows.subset == position)].n.iloc[0]
        assert 0 <= fixed <= wrong and summary[("oracle_fix_rate", position)] == pytest.approx(fixed / wrong if wrong else np.nan, nan_ok=True)
    lens = rows[rows.metric == "lens_answer_rank"]
    assert list(lens.layer) == list(range(L + 1)) and lens.value.iloc[-1] <= lens.value.iloc[0]
    assert rows[rows.metric.str.endswith(("_prob", "_top1", "_correct", "_rate"))].value.dropna().between(0, 1).all()


def check_consistency_rows(handle) -> None:
    """Internal consistency of coin-flip reasoning paths on four questions gives every layer's agreement."""
    from layerbench.data import load_task_data
    from layerbench.evaluators.consistency import evaluate_consistency
    from layerbench.specs import get_task

    L = handle.n_layers
    spec = get_task("consistency-coinflip").model_copy(update={"evaluator": {"paths": 3, "max_new_tokens": 24, "shots": 2}})
    data = load_task_data(spec, limit=6)
    rows = evaluate_consistency(EvaluatorContext(data, spec, 0, handle=handle))
    curves = rows[rows.metric == "calibrated_agreement"]
    assert set(curves.subset) == {"correct-paths", "incorrect-paths"} and set(curves.layer) == set(range(L + 1))
    assert curves.n.groupby(curves.subset).first().sum() == 4 * 3  # 4 questions x 3 paths
    # the last layer agrees with itself
    assert (curves[curves.layer == L].value.dropna() == 1).all()
    summary = rows[rows.layer.isna()].set_index("metric")
    for metric in ("path_accuracy", "greedy_accuracy", "sc_accuracy", "ic_weighted_sc_accuracy", "paths_with_answer"):
        assert 0 <= summary.value[metric] <= 1
    # The AUROC of IC is undefined exactly when the 12 paths are all right or all wrong, and a probability otherwise.
    n_right, n_wrong = int(summary.n["mean_ic_correct"]), int(summary.n["mean_ic_incorrect"])
    assert n_right + n_wrong == 12
    assert np.isnan(summary.value["ic_auroc"]) == (n_right == 0 or n_wrong == 0)
    if n_right and n_wrong:
        assert 0 <= summary.value["ic_auroc"] <= 1
    assert summary.n["greedy_accuracy"] == 4


# The latent-language family's token rules, on words of each of its languages.
WORDS = {"en": "cloud", "fr": "nuage", "de": "Wolke", "zh": "云", "ru": "облако", "ja": "雲", "ko": "구름", "hi": "बादल", "es": "nube"}


def brute_force_prefix_tokens(tokenizer, word: str) -> list[int]:
    """Every token whose bytes (decoded one token at a time, the independent way) begin a spelling of the word, spaced or not."""
    from layerbench.evaluators.latent_language import token_bytes

    decoded = token_bytes(tokenizer.get_vocab())
    spelled = [word, word[:1].upper() + word[1:], word.lower()]
    bases = [s.encode() for s in spelled] + [b" " + s.encode() for s in spelled]
    return sorted(i for i, data in decoded.items() if data and data != b" " and any(base.startswith(data) for base in bases))


def check_prefix_token_rule(handle) -> None:
    """Our token rule finds exactly the tokens a brute-force scan of the vocabulary finds, some for every word, and the token the
    model would write first."""
    from layerbench.evaluators.latent_language import prefix_token_ids

    rule = prefix_token_ids(handle.tokenizer)
    for language, word in WORDS.items():
        ids = rule(word, language)
        assert ids == brute_force_prefix_tokens(handle.tokenizer, word), word
        assert ids, f"no token begins {word!r}"
    first = handle.tokenizer(" " + WORDS["fr"], add_special_tokens=False).input_ids[0]
    assert first in rule(WORDS["fr"], "fr")


def their_process_tokens(token_str: str, tokenizer, lang: str) -> list[int]:
    """Translation.ipynb's token_prefixes, add_spaces, capitalizations, unicode_prefix_tokid and process_tokens, as written."""
    with_prefixes = [token_str[:i] for i in range(1, len(token_str) + 1)]
    with_spaces = ["▁" + t for t in with_prefixes] + with_prefixes
    final_tokens = [tokenizer.get_vocab()[tok] for tok in list(set(with_spaces)) if tok in tokenizer.get_vocab()]
    if lang in ["zh", "ru"]:
        start = token_str.encode().__str__()[2:-1].split("\\x")[1]
        start_key = "<0x%s>" % start.upper()
        if start_key in tokenizer.get_vocab():
            final_tokens.append(tokenizer.get_vocab()[start_key])
    return final_tokens


def check_stack_resumes_bit_for_bit(handle: Any) -> None:
    """The decoder stack started at each block from the full pass's state equals the full pass at every later layer, bit for
    bit: on a batch of prompts (no padding) and on the next token decoded from the cache."""
    import torch
    from transformers import DynamicCache

    from layerbench.models.residual import record_layers
    from layerbench.models.stack import decoder_stack

    stack = decoder_stack(handle)
    assert stack is not None
    model, n_layers = handle.model, handle.n_layers
    torch.manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(3, min(vocab, 5000), (3, 7))
    with torch.no_grad(), record_layers(handle, list(range(n_layers + 1))) as recorded:
        out = model(input_ids=ids, use_cache=True)
        model(input_ids=out.logits[:, -1:].argmax(-1), cache=out.cache, use_cache=True)
    for start in sorted({0, 1, n_layers // 2, n_layers - 1}):
        cache = DynamicCache(config=model.config)
        for call, positions in ((0, torch.arange(7)[None]), (1, torch.tensor([[7]]))):
            states = recorded[start][call]
            rotary = stack.position_embeddings(states, positions)
            for block in range(start, n_layers):
                states = stack.block(block, states, positions, cache, rotary)
                assert torch.equal(states, recorded[block + 1][call]), (start, call, block)
