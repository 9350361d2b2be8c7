"""Each paper protocol against a few-line re-implementation of the authors' own code path, on the packaged SmolLM2.

The re-implementations follow the released files the protocols cite
(layerbench/specs/protocols.py): Skean et al.'s truncated model, Jin et al.'s
hooks on ``post_attention_layernorm`` and single split, Biran et al.'s
patched generation and substring matching, Xie et al.'s read position and
median calibration. Same states within 1e-4 relative, same scores within
1e-3, same verdicts.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import tokenizer_restored

from layerbench.capture import CaptureRequest, capture_layers
from layerbench.data import load_task_data
from layerbench.data.two_hop import contains, parse_queries
from layerbench.evaluators.consistency import median_calibration, weighted_mode, xie2024_prompts, xie2024_read, xie2024_sample, xie2024_scores
from layerbench.evaluators.probe import encode_labels, evaluate_probe
from layerbench.families import EvaluatorContext
from layerbench.specs import get_task
from layerbench.specs.protocols import get_protocol


def under(name: str, protocol: str, **settings):
    return get_task(name).under(protocol, {**get_protocol(protocol).settings, **settings})


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# --- Skean et al. 2025 (OFSkean/information_flow, mteb_automodel_wrapper.py) ---------------------------------


def _truncated_model_vectors(path, tokenizer, texts: list[str], layer: int) -> np.ndarray:
    """Their encoder: config.num_hidden_layers = l, left padding, the last hidden state mean-pooled over the last `length` positions.

    Under their transformers 4.40, hidden_states[l] of an l-block model is its last hidden state (after the final norm).
    """
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, num_hidden_layers=layer).eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        out = []
        for start in range(0, len(texts), 8):
            enc = tokenizer(texts[start : start + 8], return_tensors="pt", padding=True, truncation=True, max_length=2048)
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state
            out += [hidden[i, -n:].mean(0) for i, n in enumerate(enc["attention_mask"].sum(-1))]
    finally:
        tokenizer.padding_side = side
    return torch.stack(out).float().numpy()


@pytest.mark.slow
def test_skean2024_equals_a_truncated_model_in_states_and_mteb_scores(smollm):
    from layerbench.data.mteb_tasks import run_mteb
    from layerbench.evaluators.mteb import encoder_inputs, layer_encoder

    spec = under("mteb-lee-sts", "skean2024")
    data = load_task_data(spec, limit=30)
    ours = capture_layers(smollm, CaptureRequest(data.texts, pooling="mean", cache=False, sites=("normed",))).sites["normed"].pooled
    for layer in (0, 15):  # layer L of the normed site is Hugging Face's last entry (tests/test_sites.py)
        theirs = _truncated_model_vectors(smollm.checkpoint.path, smollm.tokenizer, data.texts, layer)
        assert relative(ours[layer], theirs) < 1e-4, layer
        scores = [run_mteb(layer_encoder(states, encoder_inputs(data)), data.payload).task_results[0].get_score() for states in (ours[layer], theirs)]
        assert abs(scores[0] - scores[1]) < 1e-3, (layer, scores)


# --- Jin et al. 2024 (Luckfort/CD, utils.py LLM.get_hidden_states, main.py) -----------------------------------


def _jin_states(handle, text: str) -> np.ndarray:
    """utils.py: TraceDict on model.layers.{i}.post_attention_layernorm, one unpadded text, the last token: ``[L, D]``."""
    traced = []
    hooks = [block.post_attention_layernorm.register_forward_hook(lambda m, a, o: traced.append(o[0, -1])) for block in handle.model.model.layers]
    try:
        with torch.no_grad():
            handle.model(**handle.tokenizer(text, return_tensors="pt"))
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(traced).numpy()


@pytest.mark.slow
def test_jin2024_equals_the_authors_hooks_grouping_and_split(smollm):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    spec = under("concept-capitals", "jin2024")
    data = load_task_data(spec, limit=40)
    y = encode_labels(data.labels, spec.labels)
    pooled = capture_layers(smollm, CaptureRequest(data.texts, pooling="last", cache=False, sites=("mlp-input",))).sites["mlp-input"].pooled  # [L, N, D]
    rows = evaluate_probe(EvaluatorContext(data, spec, 0, states={"clean": pooled}, layers=range(1, smollm.n_layers + 1))).rows
    # main.py: X = [every text of the first list, then the second], y = 0s then 1s.
    first = [t for t, c in zip(data.texts, y) if c == 0]
    second = [t for t, c in zip(data.texts, y) if c == 1]
    theirs = np.stack([_jin_states(smollm, t) for t in first + second], axis=1)  # [L, N, D]
    order = [data.texts.index(t) for t in first + second]
    assert relative(pooled[:, order], theirs) < 1e-4
    labels = np.r_[np.zeros(len(first)), np.ones(len(second))]
    for block in (0, 9, 19, 29):  # their layer index i is our layer i + 1
        X_train, X_test, y_train, y_test = train_test_split(theirs[block], labels, test_size=0.4, random_state=42)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(penalty="l2").fit(X_train, y_train)
        expected = {"accuracy": accuracy_score(y_test, clf.predict(X_test)), "f1": f1_score(y_test, clf.predict(X_test), average="binary"),
                    "auroc": roc_auc_score(y_test, clf.predict_proba(X_test)[:, 1])}
        got = rows[rows.layer == block + 1].set_index("metric")["value"]
        for metric, value in expected.items():
            assert abs(got[metric] - value) < 1e-3, (block, metric, got[metric], value)


# --- Biran et al. 2024 (edenbiran/HoppingTooLate, patched_generation.py, utils.py) ---------------------------


def _find_tokens(tokenizer, ids: torch.Tensor, substring: str) -> int:
    """patched_generation.find_tokens: the last token of " " + substring (prepend_space, as for their GPT-2 and Llama 3, BPE
    tokenizers like SmolLM2's), or of the bare substring where it opens the prompt (their prompts never start with it;
    ours do: "{} is located in the continent of")."""
    for text in (" " + substring, substring):
        sub = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
        for start in range(len(ids) - len(sub) + 1):
            if torch.equal(ids[start : start + len(sub)], sub):
                return start + len(sub) - 1
    raise AssertionError(f"{substring!r} not found")


def _biran_generate(handle, prompts: list[str], patch=None) -> list[str]:
    """utils.generate_and_test_answers / generate_with_patching_layer: left-padded greedy generation of 10 tokens, the prompt's characters cut off."""
    model = handle.model
    hook = None
    with tokenizer_restored(handle) as tok:
        tok.padding_side, tok.pad_token = "left", tok.pad_token or tok.eos_token
        enc = tok(prompts, return_tensors="pt", padding=True)
        if patch is not None:
            block, positions, vectors = patch

            def replace(module, args, output):
                hidden = output[0] if isinstance(output, tuple) else output
                if hidden.shape[1] == 1:  # after the prefill the state is cached
                    return output
                hidden = hidden.clone()
                hidden[torch.arange(len(prompts)), positions(enc.input_ids)] = vectors
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

            hook = handle.anatomy.blocks[block].register_forward_hook(replace)
        try:
            with torch.no_grad():
                generated = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=10, pad_token_id=tok.eos_token_id)
        finally:
            if hook is not None:
                hook.remove()
        texts = tok.batch_decode(generated, skip_special_tokens=True)
    return [t[len(p):].strip().replace("\n", " ") for t, p in zip(texts, prompts)]


@pytest.mark.slow
def test_biran2024_checks_and_back_patching_verdicts_equal_the_authors(smollm):
    from layerbench.evaluators.backpatch import check_prompts, e1_last_token, layer_pairs, run_checks, sweep_query

    spec = under("backpatch-two-hop", "biran2024", sweep="all", layer_step=15)
    settings = spec.settings
    queries = parse_queries(load_task_data(spec, limit=3).records, "test")
    # The five checks (evaluate_dataset.py): prompts as written, substring answers.
    ours = run_checks(smollm, queries, settings)
    for check in ("first_hop", "second_hop", "composition", "entity_shortcut", "relation_shortcut"):
        prompts = [check_prompts(q, settings)[check] for q in queries]
        theirs = [contains(t, q.substring_answers(entity)) for t, q, (_, entity) in zip(_biran_generate(smollm, [p for p, _ in prompts]), queries, prompts)]
        assert list(ours[check]) == theirs, check
    # Back-patching (patch_activations.py with target "original"): block outputs, ls > lt.
    pairs = layer_pairs(smollm.n_layers, settings)
    assert min(min(p) for p in pairs) == 1 and all(ls > lt for ls, lt in pairs)
    prompts = [q.composed(capitalize=False) for q in queries]
    with tokenizer_restored(smollm) as tok:
        tok.padding_side, tok.pad_token = "right", tok.pad_token or tok.eos_token
        enc = tok(prompts, return_tensors="pt", padding=True)
    tok = smollm.tokenizer
    recorded = []
    hooks = [b.register_forward_hook(lambda m, a, o: recorded.append(o[0] if isinstance(o, tuple) else o)) for b in smollm.anatomy.blocks]
    with torch.no_grad():
        smollm.model(**enc)
    for h in hooks:
        h.remove()
    # get_hidden_states: the source token of each prompt, every block output. Their "last" source is the final
    # " is" of their prompts ("... of X is"), the prompt's last token; ours end in other words, so it is taken as that.
    sources = {
        "e1-last": [_find_tokens(tok, enc.input_ids[i], q.r1_phrase.format(q.e1)) for i, q in enumerate(queries)],
        "prompt-last": (enc.attention_mask.sum(1) - 1).tolist(),
    }
    # generate_patching_inputs: the last occurrence of the target token in the left-padded prompt (e1's last token; the last token).
    e1_ids = torch.tensor([tok(" " + q.e1, add_special_tokens=False).input_ids[-1] for q in queries])
    targets = {
        "e1-last": lambda ids: (ids == e1_ids[:, None]).cumsum(dim=1).argmax(dim=1),
        "prompt-last": lambda ids: torch.full((ids.shape[0],), ids.shape[1] - 1),
    }
    mine = {}
    for i, q in enumerate(queries):
        positions = {"e1-last": e1_last_token(smollm, prompts[i], q.e1), "prompt-last": len(tok(prompts[i]).input_ids) - 1}
        for key, text in sweep_query(smollm, prompts[i], positions, pairs, q.substring_answers("e3"), 10, 64, substring=True).items():
            mine[(i, *key)] = contains(text, q.substring_answers("e3"))
    compared = 0
    for position in ("e1-last", "prompt-last"):
        for ls, lt in pairs:
            vectors = torch.stack([recorded[ls - 1][i, sources[position][i]] for i in range(len(queries))])
            texts = _biran_generate(smollm, prompts, (lt - 1, targets[position], vectors))
            for i, q in enumerate(queries):
                assert mine[(i, position, ls, lt)] == contains(texts[i], q.substring_answers("e3")), (i, position, ls, lt, texts[i])
                compared += 1
    assert compared == len(queries) * 2 * len(pairs)


# --- Xie et al. 2024 (zhxieml/internal-consistency, extract.py, eval_sc.py) -----------------------------------


def _their_agreement(norm_probs: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """eval_sc.py's cal_agreement_accs on one vote index: (aocs [Q], calibrated_accs [Q])."""
    norm_probs = norm_probs.float()
    n_labels = norm_probs.shape[-1]
    quantiles = torch.quantile(norm_probs, (n_labels - 1) / n_labels, dim=0, keepdim=True)
    calibrated = (norm_probs > quantiles).float() + (1 / n_labels) * (norm_probs == quantiles).float()
    finals = calibrated[:, -1].max(-1).indices[:, None, None].repeat(1, norm_probs.shape[1], 1)
    consistency = torch.gather(calibrated, 2, finals)
    accs = torch.gather(calibrated, 2, gt[:, None, None].repeat(1, norm_probs.shape[1], 1))[:, -1]
    return consistency.sum(1)[:, 0], accs[:, 0]


def test_xie2024_calibration_and_votes_equal_eval_sc_on_random_probabilities():
    rng = np.random.default_rng(0)
    p_true = rng.uniform(size=(9, 4, 7))
    probs = np.stack([p_true, 1 - p_true], axis=-1)  # [Q, V, L+1, 2]
    truth = rng.uniform(size=9) > 0.5
    ours = xie2024_scores(probs, truth, seed=0, permutations=3)
    gt = torch.tensor(np.where(truth, 0, 1))
    for v in range(4):
        aocs, accs = _their_agreement(torch.tensor(probs[:, v]), gt)
        np.testing.assert_allclose(ours["ic"][:, v], aocs.numpy(), atol=1e-6)
        np.testing.assert_allclose(ours["score"][:, v], accs.numpy(), atol=1e-6)
    # Median calibration: with 9 questions the median is one of them and scores 1/2.
    calibrated = median_calibration(probs[:, 0])
    assert (calibrated == 0.5).sum(axis=0).tolist() == [[1, 1]] * 7
    # weighed_mode_rand_ties: the heaviest value wins; a tie is broken at random among the tied values.
    assert weighted_mode(np.array([1.0, 0.0, 0.0]), np.array([5.0, 1.0, 1.0]), rng) == 1.0
    draws = {weighted_mode(np.array([1.0, 0.0]), np.array([1.0, 1.0]), rng) for _ in range(50)}
    assert draws == {0.0, 1.0}


def test_xie2024_calibration_is_float32_as_eval_sc_computes_it():
    """Four questions whose two middle probabilities are neighbouring float32 values: torch.quantile in float32 (the
    authors' all_norm_probs.float()) rounds their midpoint to one of them, which then scores 1/2; a float64 median
    lies strictly between and would score it 0 or 1."""
    low = np.float32(0.3)
    high = np.nextafter(low, np.float32(1.0))
    p_true = np.array([0.1, low, high, 0.9], dtype=np.float32)[:, None]  # [Q, L+1 = 1]
    probs = np.stack([p_true, 1 - p_true], axis=-1).astype(np.float64)  # what the lens hands over: float32 values held in float64
    gt = torch.zeros(4, dtype=torch.long)
    theirs_ic, theirs_acc = _their_agreement(torch.tensor(probs), gt)
    ours = median_calibration(probs)
    assert (ours[:, 0, 0] == 0.5).sum() == 1  # one of the two neighbours is the float32 median
    assert np.float64(np.median(probs[:, 0, 0])) not in (float(low), float(high))  # in float64 neither would be
    scores = xie2024_scores(probs[:, None], np.ones(4, bool), seed=0, permutations=1)
    np.testing.assert_array_equal(scores["ic"][:, 0], theirs_ic.numpy())
    np.testing.assert_array_equal(scores["score"][:, 0], theirs_acc.numpy())


def test_biran2024_finds_an_answer_broken_over_two_lines_as_the_authors_do():
    """decode_generated (utils.py, patched_generation.py) strips a continuation and turns its newlines into spaces before the
    substring check, so "New\nYork" holds the answer "New York"; our own protocol's whole-word check is unchanged."""
    from layerbench.evaluators.backpatch import answer_check, biran2024_prediction, settled
    from layerbench.families.backpatch import BackpatchSettings

    _, found = answer_check(BackpatchSettings(protocol="biran2024"))
    assert biran2024_prediction("  the city of New\nYork\n") == "the city of New York"
    assert found(" the city of New\nYork.", ["New York"]) and not contains(" the city of New\nYork.", ["New York"])
    assert settled(" New\nYork", ["New York"], substring=True)
    _, ours = answer_check(BackpatchSettings())
    assert ours(" It is Paris.", ["Paris"]) and not ours(" It is Parisian.", ["Paris"])


def _their_cut(output: str) -> str:
    """extract.py: the decoded path without its last ". " sentence, ending in "."."""
    cot = output.split(". ")[:-1]
    answer = ". ".join(cot) if len(cot) else output
    return answer + ("." if not answer.endswith(".") else "")


@pytest.mark.slow
def test_xie2024_read_position_and_scores_equal_extract_and_eval_sc(smollm):
    spec = under("consistency-coinflip", "xie2024", paths=1, seeds=2, max_new_tokens=24)
    data = load_task_data(spec, limit=8)
    labels, questions, prompts = xie2024_prompts(data, spec.settings, spec.name)
    prompts, questions = prompts[:3], questions[:3]
    outputs = xie2024_sample(smollm, prompts, spec.settings, seed=0)
    assert all(len(o) == 2 and all("\n" not in x for x in o) for o in outputs)  # 2 seeds x 1 path: two vote indices
    ours = xie2024_read(smollm, prompts, outputs, spec.settings.answers)  # [Q, V, L+1, 2]
    # extract.py: prompt + " " + cut path, stripped; left padding; lens at the last token on hidden_states[:-1]; the model's logits last.
    tok, model = smollm.tokenizer, smollm.model
    texts = [(p + " " + _their_cut(o)).strip() for p, outs in zip(prompts, outputs) for o in outs]
    answer_ids = [tok(" True", add_special_tokens=False).input_ids[0], tok(" False", add_special_tokens=False).input_ids[0]]
    side, tok.padding_side = tok.padding_side, "left"
    enc = tok(texts, return_tensors="pt", padding=True)
    tok.padding_side = side
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
        norm, head = smollm.anatomy.final_norm, smollm.anatomy.unembedding
        layers = [head(norm(h[:, -1]))[:, answer_ids] for h in out.hidden_states[:-1]] + [out.logits[:, -1][:, answer_ids]]
    theirs = torch.stack(layers, dim=1).softmax(-1).numpy().reshape(ours.shape)
    assert np.abs(ours - theirs).max() < 1e-4
    scored = xie2024_scores(ours, labels[questions], seed=0)
    gt = torch.tensor(np.where(labels[questions], 0, 1))
    for v in range(ours.shape[1]):
        aocs, accs = _their_agreement(torch.tensor(theirs[:, v]), gt)
        np.testing.assert_allclose(scored["ic"][:, v], aocs.numpy(), atol=1e-6)
        np.testing.assert_allclose(scored["score"][:, v], accs.numpy(), atol=1e-6)

