"""Internal consistency (Xie et al. 2024, "Calibrating Reasoning in Language Models with Internal Consistency").

Per true/false question the model writes K sampled chain-of-thought paths
after a few-shot prompt. Each path is cut before its final answer and
followed by " So the answer is"; at that position the logit lens gives, for
every layer, a latent answer: ``p_l = softmax(lens logits of the two answer
tokens)[True]``. The final answer of a path is the last layer's (the model's
own) choice between the two.

Internal consistency (IC) of a path, in ``[0, 1]``:

- calibrated (Xie et al.): layer ``l``'s latent answer is ``p_l > tau_l``,
  where ``tau_l`` is the quantile of ``p_l`` over all paths of the task that
  leaves the same share of True answers as the final layer gives (this removes
  each layer's bias towards one answer); IC is the share of layers
  ``first_layer..L`` whose calibrated answer equals the calibrated final one;
- plain: the same share with the raw answers ``p_l > 0.5``.

Rows: the per-layer agreement curves of correct and incorrect paths; the
AUROC of IC for telling correct from incorrect paths; the accuracy of greedy
decoding, of self-consistency (the majority over K paths) and of
self-consistency with each vote weighted by its path's IC.

The ``xie2024`` protocol (:func:`evaluate_xie2024`, the function its protocol record names) follows the authors'
released code (zhxieml/internal-consistency ``decode.py``, ``extract.py``,
``eval_sc.py``) instead; its module-level helpers say what each step reads.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import torch

from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.families import EvaluatorContext
from layerbench.families.consistency import ConsistencySettings
from layerbench.metrics.arrays import mean_and_stderr
from layerbench.models.generation import generate
from layerbench.models.loading import ModelHandle
from layerbench.models.residual import continuation_states, first_token_id, lens_logits
from layerbench.paired import STDERR_RESAMPLES, bootstrap_weights, weighted_auroc
from layerbench.results.rows import mean_row, summary_row

ANSWER_CUE = " So the answer is"
# Where a sampled path stops reasoning: it states its answer, or starts a new question.
_PATH_END = re.compile(r"(?:so )?the answer is|\n\s*\n|\nQ:", flags=re.IGNORECASE)


def few_shot_prompt(exemplars: list[tuple[str, str, str]], question: str) -> str:
    """A chain-of-thought prompt: worked ``(question, rationale, answer)`` examples, then ``question``."""
    shots = "".join(f"Q: True or false? {q}\nA: {r}{ANSWER_CUE} {a}.\n\n" for q, r, a in exemplars)
    return f"{shots}Q: True or false? {question}\nA:"


def cut_path(text: str) -> tuple[str, bool]:
    """A sampled path up to (not including) its own final answer, and whether it reached one."""
    match = _PATH_END.search(text)
    return (text[: match.start()] if match else text).strip(), bool(match and "answer" in match.group(0).lower())


def calibrated_answers(p_true: np.ndarray, final_true: np.ndarray) -> np.ndarray:
    """Each layer's latent answers thresholded at the quantile that keeps the final layer's share of True.

    Args:
        p_true: ``[L+1, P]`` probability of the first answer per layer and path.
        final_true: ``[P]`` the final answers (True = the first answer).

    Returns:
        ``[L+1, P]`` booleans: ``p_true[l] > quantile(p_true[l], 1 - mean(final_true))``.
    """
    q = 1.0 - float(final_true.mean())
    thresholds = np.quantile(p_true, q, axis=1, method="lower", keepdims=True)
    answers = p_true > thresholds
    if q <= 0:  # every final answer is True: every layer's answer is True after calibration
        answers[:] = True
    return answers


def internal_consistency(latent: np.ndarray, final: np.ndarray, first_layer: int) -> np.ndarray:
    """``[P]`` share of layers ``first_layer..L`` whose latent answer (``[L+1, P]``) equals ``final`` (``[P]``)."""
    return (latent[first_layer:] == final[None, :]).mean(axis=0)


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, scores)) if 0 < positive.sum() < len(positive) else float("nan")


def auroc_with_stderr(scores: np.ndarray, positive: np.ndarray, questions: np.ndarray, seed: int) -> tuple[float, float]:
    """The AUROC of ``scores`` [P] telling the ``positive`` [P] paths from the rest, and its standard error.

    The error is the standard deviation of the AUROC over :data:`~layerbench.paired.STDERR_RESAMPLES` resamples of the questions
    (``questions`` [P]: each path's question), all of a drawn question's paths together: paths of one question share
    its prompt and its answer, so resampling paths as if independent would understate the error. Draws with one
    class only are skipped; NaN when fewer than two questions or no draw has both classes.
    """
    value = _auroc(scores, positive)
    ids = np.unique(questions)
    if len(ids) < 2 or not np.isfinite(value):
        return value, float("nan")
    # A drawn question brings all its paths: each path weighs as often as its question is drawn.
    question_of_path = np.searchsorted(ids, questions)
    draws = weighted_auroc(scores, positive, bootstrap_weights(len(ids), STDERR_RESAMPLES, seed)[:, question_of_path])
    draws = draws[np.isfinite(draws)]
    return value, float(np.std(draws, ddof=1)) if len(draws) > 1 else float("nan")


def _weighted_vote(answers: np.ndarray, weights: np.ndarray) -> bool:
    """The answer with more weight (ties go to True, the first answer)."""
    return float(weights[answers].sum()) >= float(weights[~answers].sum())


def item_truth(data: TextDataset, task: str) -> np.ndarray:
    """``[N]`` booleans: whether each item's label is true (labels read as text, any case).

    Raises:
        UserError: the data has no labels.
    """
    if data.labels is None:
        raise UserError(f"task '{task}': internal consistency needs true/false labels")
    return np.array([str(v).lower() == "true" for v in data.labels])


def worked_example_items(labels: np.ndarray, shots: int) -> list[int]:
    """The items taken as worked examples when a spec gives none: the first ``shots`` of alternating labels (true, false, true, ...)."""
    return [int(i) for pair in zip(np.flatnonzero(labels), np.flatnonzero(~labels)) for i in pair][:shots]


def asked_items(n: int, examples: list[int], task: str, shots: int) -> list[int]:
    """The items asked: all ``n`` but the worked ``examples``.

    Raises:
        UserError: none is left.
    """
    taken = set(examples)
    questions = [i for i in range(n) if i not in taken]
    if not questions:
        raise UserError(f"task '{task}': no questions left after taking {shots} worked examples")
    return questions


def answer_probabilities(handle: ModelHandle, states: torch.Tensor, answers: tuple[str, str]) -> torch.Tensor:
    """``[L+1, P, 2]`` (float32): every layer's logit-lens probabilities of the two answers' first tokens (a softmax over the two).

    Args:
        states: ``[L+1, P, D]`` raw residual states at the read position; layer L's lens is the model's own logits.
    """
    answer_ids = [first_token_id(handle, answer) for answer in answers]
    with torch.no_grad():
        logits = torch.stack([lens_logits(handle, states[layer])[:, answer_ids] for layer in range(states.shape[0])])
    return torch.softmax(logits, dim=-1)


def mean_where(values: np.ndarray, members: np.ndarray) -> float:
    """The mean of ``values[members]``, NaN when no member is chosen."""
    return float(values[members].mean()) if members.any() else float("nan")


def summary_rows(entries: dict[str, tuple[float, int, bool | None]], stderr: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Summary rows (subset ``all``) from ``metric -> (value, n, higher_is_better)``, with ``stderr[metric]`` where given."""
    stderr = stderr or {}
    return [summary_row(metric, value, n=n, higher_is_better=better, subset="all", stderr=stderr.get(metric, float("nan")))
            for metric, (value, n, better) in entries.items()]


def question_prompts(data: TextDataset, settings: ConsistencySettings, task: str) -> tuple[np.ndarray, list[int], list[str]]:
    """The items' truth (``[N]`` booleans), the indices of the items asked, and their few-shot prompts.

    The worked examples are the spec's ``exemplars`` if it gives them (every
    item is then asked), else the first ``shots`` items of alternating labels
    with a ``rationale`` record (left out of the questions).
    """
    labels = item_truth(data, task)
    first, second = settings.answers
    if settings.exemplars:
        exemplars = [(e.question, e.rationale, first if e.answer else second) for e in settings.exemplars]
        order: list[int] = []
    else:
        if data.records is None or any("rationale" not in r for r in data.records):
            raise UserError(f"task '{task}': internal consistency needs a worked 'rationale' per item, or 'exemplars' in the evaluator settings")
        order = worked_example_items(labels, settings.shots)
        exemplars = [(data.texts[i], data.records[i]["rationale"], first if labels[i] else second) for i in order]
    questions = asked_items(len(data), order, task, settings.shots)
    return labels, questions, [few_shot_prompt(exemplars, data.texts[i]) for i in questions]


def evaluate_consistency(context: EvaluatorContext) -> pd.DataFrame:
    """Sample paths, read every layer's latent answer with the logit lens, and score internal consistency (module docstring)."""
    handle, data, spec, seed = context.handle, context.data, context.spec, context.seed
    settings: ConsistencySettings = spec.settings
    labels, questions, prompts = question_prompts(data, settings, spec.name)
    stops = ["answer is", "\n\n", "\nQ:"]  # what cut_path cuts at: nothing after it is read
    sampled = generate(handle, prompts, settings.max_new_tokens, batch_size=max(1, 32 // settings.paths), sample=True,
                       temperature=settings.temperature, top_p=settings.top_p, num_return_sequences=settings.paths, seed=seed, stop_strings=stops,
                       desc=f"{settings.paths} sampled paths per question")
    greedy = generate(handle, prompts, settings.max_new_tokens, batch_size=16, stop_strings=stops, desc="greedy path per question")
    # Every path (K sampled, then the greedy one) is cut before its answer and asked for it.
    paths = [(q, cut_path(text)) for q, texts in enumerate(sampled) for text in texts] + [(q, cut_path(t[0])) for q, t in enumerate(greedy)]
    # Each question's prompt runs once; its paths run on copies of its key/value cache.
    by_question: dict[int, list[int]] = {}
    for index, (q, _) in enumerate(paths):
        by_question.setdefault(q, []).append(index)
    states = torch.empty(handle.n_layers + 1, len(paths), handle.hidden_size)
    for q, members in by_question.items():
        continuations = [f" {paths[i][1][0]}{ANSWER_CUE}" if paths[i][1][0] else ANSWER_CUE for i in members]
        states[:, members] = continuation_states(handle, prompts[q], continuations)
    p_true = answer_probabilities(handle, states, settings.answers)[..., 0].numpy()
    n_sampled = len(questions) * settings.paths
    question_of = np.array([q for q, _ in paths])
    truth = labels[questions][question_of]
    final = p_true[-1] > 0.5
    correct = final == truth

    # Calibration uses the sampled paths only: they are the data set of paths IC is defined over.
    calibrated = calibrated_answers(p_true[:, :n_sampled], final[:n_sampled])
    ic = internal_consistency(calibrated, calibrated[-1], settings.first_layer)
    plain = internal_consistency(p_true[:, :n_sampled] > 0.5, final[:n_sampled], settings.first_layer)
    ok = correct[:n_sampled]

    rows = []
    n_layers = p_true.shape[0]
    for subset, members in (("correct-paths", ok), ("incorrect-paths", ~ok)):
        for layer in range(n_layers):
            for metric, latent, reference in (("calibrated_agreement", calibrated[layer], calibrated[-1]), ("agreement", p_true[layer, :n_sampled] > 0.5, final[:n_sampled])):
                rows.append(mean_row(metric, layer, (latent == reference)[members].astype(float), higher_is_better=None, subset=subset))

    sc, weighted = [], []
    for q in range(len(questions)):
        mine = slice(q * settings.paths, (q + 1) * settings.paths)
        sc.append(_weighted_vote(final[mine], np.ones(settings.paths)) == labels[questions[q]])
        weighted.append(_weighted_vote(final[mine], ic[mine]) == labels[questions[q]])
    reached = np.array([done for _, (_, done) in paths[:n_sampled]], dtype=float)
    auroc, auroc_se = auroc_with_stderr(ic, ok, question_of[:n_sampled], seed)
    summary = {
        "ic_auroc": (auroc, len(ok), True),
        "plain_ic_auroc": (_auroc(plain, ok), len(ok), True),
        "path_accuracy": (float(ok.mean()), len(ok), True),
        "greedy_accuracy": (float(correct[n_sampled:].mean()), len(questions), True),
        "sc_accuracy": (float(np.mean(sc)), len(questions), True),
        "ic_weighted_sc_accuracy": (float(np.mean(weighted)), len(questions), True),
        "mean_ic_correct": (mean_where(ic, ok), int(ok.sum()), None),
        "mean_ic_incorrect": (mean_where(ic, ~ok), int((~ok).sum()), None),
        "paths_with_answer": (float(reached.mean()), len(reached), None),
    }
    return pd.DataFrame(rows + summary_rows(summary, stderr={"ic_auroc": auroc_se}))


# ---------------------------------------------------------------------------
# The xie2024 protocol: Xie et al.'s released code, step by step.
# ---------------------------------------------------------------------------

XIE_PERMUTATIONS = 100  # eval_sc.py's NUM_PERMS: tie-breaking draws averaged


def _query_block(record: dict | None, text: str) -> str:
    """An item's query block ``"{context}\nQ: {question}"``: from its record (the papers' files), else ``"Q: True or false: {text}"``."""
    from layerbench.data.consistency_files import query_block

    if record is not None and "question" in record:
        return query_block(record.get("context"), record["question"])
    return query_block(None, f"True or false: {text}")


def xie2024_prompts(data: TextDataset, settings: ConsistencySettings, task: str) -> tuple[np.ndarray, list[int], list[str]]:
    """``format_icl`` of every question: worked examples ``"{block}\nA: {chain} {answer}\n\n"``, then ``"{block}\nA:"``.

    The examples are the item's own (its record's ``exemplars``: ProntoQA,
    ProofWriter), else the spec's ``exemplars`` (BoolQ, coin flip), else the
    first ``shots`` items with a ``rationale`` record, alternating labels
    (left out of the questions). No answer trigger: the answer word follows
    the chain after a space (``answer_formatter = lambda ans: ans``).

    Returns:
        The items' truth ``[N]``, the indices of the items asked, their prompts.
    """
    labels = item_truth(data, task)
    first, second = settings.answers
    records: list[dict[str, Any]] = list(data.records) if data.records is not None else [{} for _ in data.texts]  # {}: no fields beyond text and label
    shots: list[tuple[str, str, bool]] = []
    order: list[int] = []
    if settings.exemplars:
        shots = [(_query_block({"context": e.context, "question": e.question}, e.question), e.rationale, e.answer) for e in settings.exemplars]
    elif not all(r.get("exemplars") for r in records):
        if any("rationale" not in r for r in records):
            raise UserError(f"task '{task}': internal consistency needs worked examples: 'exemplars' in the evaluator settings, per-item exemplars, or a 'rationale' per item")
        order = worked_example_items(labels, settings.shots)
        shots = [(_query_block(records[i], data.texts[i]), records[i]["rationale"], bool(labels[i])) for i in order]
    questions = asked_items(len(data), order, task, settings.shots)
    prompts = []
    for i in questions:
        own = records[i].get("exemplars")
        examples = [(_query_block(e, e["question"]), e["rationale"], bool(e["answer"])) for e in own] if own and not settings.exemplars else shots
        text = "".join(f"{block}\nA: {rationale} {first if answer else second}\n\n" for block, rationale, answer in examples)
        prompts.append(text + f"{_query_block(records[i], data.texts[i])}\nA:")
    return labels, questions, prompts


def xie2024_cut(output: str) -> str:
    """The chain ``extract.py`` reads the lens after: the path without its last ". "-separated sentence, ending in "." (the whole path if it has one sentence)."""
    sentences = output.split(". ")[:-1]
    chain = ". ".join(sentences) if sentences else output
    return chain if chain.endswith(".") else chain + "."


def xie2024_stop(text: str) -> str:
    """A sampled path as ``decode.py`` keeps it: up to its first newline (vLLM's stop tokens [13, 13] are Llama 2's newline), stripped."""
    return text.split("\n")[0].strip()


def median_calibration(probs: np.ndarray) -> np.ndarray:
    """``eval_sc.py``'s calibration of one vote index: each (layer, answer) probability against its median over questions.

    Args:
        probs: ``[Q, L+1, 2]`` the two answers' probabilities per question and layer.

    Returns:
        ``[Q, L+1, 2]``: 1 above the median, 1/2 at it, 0 below. As the authors compute it: in float32
        (``all_norm_probs.float()``, ``torch.quantile(..., 1/2)``, linear interpolation), where the midpoint of two
        neighbouring float32 values rounds to one of them, which then scores 1/2 (in float64 it would score 0 or 1).
    """
    probs32 = torch.from_numpy(np.asarray(probs, dtype=np.float32))
    median = torch.quantile(probs32, 0.5, dim=0, keepdim=True)
    return ((probs32 > median).double() + 0.5 * (probs32 == median).double()).numpy()


def weighted_mode(values: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> float:
    """``eval_sc.py``'s ``weighed_mode_rand_ties``: the value with the most total weight, ties broken at random."""
    totals: dict[float, float] = {}
    for v, w in zip(values.tolist(), weights.tolist()):
        totals[v] = totals.get(v, 0.0) + w
    best = max(totals.values())
    ties = [v for v, t in totals.items() if t == best]
    return float(ties[0] if len(ties) == 1 else rng.choice(ties))


def xie2024_scores(probs: np.ndarray, truth: np.ndarray, seed: int = 0, permutations: int = XIE_PERMUTATIONS) -> dict[str, Any]:
    """IC, correctness and votes of V paths of each of Q questions, as ``eval_sc.py`` computes them.

    Args:
        probs: ``[Q, V, L+1, 2]`` probabilities of (first answer, second answer), per question, vote index and layer.
        truth: ``[Q]`` whether the first answer is right.

    Returns:
        ``consistency`` ``[Q, V, L+1]`` (each layer's calibrated score of the calibrated final answer),
        ``ic`` ``[Q, V]`` (its sum over all L+1 layers), ``score`` ``[Q, V]`` (the calibrated final score of the
        true answer: 1, 1/2 or 0), ``correct`` ``[Q, V]`` (the calibrated final answer is the true one),
        and ``sc_accuracy`` / ``ic_weighted_sc_accuracy``: the mean over questions of the (IC-weighted)
        mode of ``score`` over all votes, averaged over ``permutations`` seeded tie-breaking draws.
    """
    n_questions, n_votes = probs.shape[:2]
    gold = np.where(truth, 0, 1)  # label index: the first answer is index 0 (their label_map True: 0)
    consistency = np.empty(probs.shape[:3])
    score = np.empty((n_questions, n_votes))
    correct = np.empty((n_questions, n_votes), dtype=bool)
    for v in range(n_votes):
        calibrated = median_calibration(probs[:, v])  # [Q, L+1, 2]
        final = calibrated[:, -1].argmax(-1)  # ties go to the first answer, as torch's max does
        consistency[:, v] = np.take_along_axis(calibrated, final[:, None, None], axis=2)[..., 0]
        score[:, v] = calibrated[np.arange(n_questions), -1, gold]
        correct[:, v] = final == gold
    ic = consistency.sum(axis=2)
    rng = np.random.default_rng(seed)
    sc, weighted = [], []
    for _ in range(permutations):
        sc.append(np.mean([weighted_mode(score[q], np.ones(n_votes), rng) for q in range(n_questions)]))
        weighted.append(np.mean([weighted_mode(score[q], ic[q], rng) for q in range(n_questions)]))
    return {"consistency": consistency, "ic": ic, "score": score, "correct": correct,
            "sc_accuracy": float(np.mean(sc)), "ic_weighted_sc_accuracy": float(np.mean(weighted))}


def xie2024_sample(handle: ModelHandle, prompts: list[str], settings: ConsistencySettings, seed: int) -> list[list[str]]:
    """``decode.py``: ``seeds`` rounds of ``paths`` sampled paths per prompt, each stopped at its first newline: ``[Q][seeds * paths]`` texts."""
    outputs: list[list[str]] = [[] for _ in prompts]
    for round_ in range(settings.seeds):
        sampled = generate(handle, prompts, settings.max_new_tokens, batch_size=max(1, 32 // settings.paths), sample=True,
                           temperature=settings.temperature, top_p=settings.top_p, num_return_sequences=settings.paths,
                           seed=seed + 1000 * round_, stop_strings=["\n"])
        for q, texts in enumerate(sampled):
            outputs[q] += [xie2024_stop(t) for t in texts]
    return outputs


def xie2024_read(handle: ModelHandle, prompts: list[str], outputs: list[list[str]], answers: tuple[str, str]) -> np.ndarray:
    """``extract.py``: every layer's probabilities of the two answers at the last token of ``prompt + " " + cut path``.

    Layers 0..L-1 through the final norm and the unembedding (the logit
    lens), layer L the model's own logits (the lens of the raw last layer is
    exactly those); a softmax over the two answer tokens.

    Returns:
        float64 ``[Q, V, L+1, 2]``, V paths per prompt.
    """
    n_votes = len(outputs[0])
    states = torch.empty(handle.n_layers + 1, len(prompts) * n_votes, handle.hidden_size)
    for q, prompt in enumerate(prompts):
        states[:, q * n_votes : (q + 1) * n_votes] = continuation_states(handle, prompt, [" " + xie2024_cut(o) for o in outputs[q]])
    probs = answer_probabilities(handle, states, answers).numpy().astype(np.float64)
    return probs.transpose(1, 0, 2).reshape(len(prompts), n_votes, states.shape[0], 2)


def evaluate_xie2024(context: EvaluatorContext) -> pd.DataFrame:
    """Internal consistency as Xie et al.'s released code measures it.

    ``seeds`` x ``paths`` paths per question (temperature, top_p, up to
    ``max_new_tokens``, stopped at the first newline); each path cut before its
    last sentence (:func:`xie2024_cut`) and read by the logit lens at its last
    token, no answer cue, over the two answer tokens; calibrated per vote index
    at the median (:func:`median_calibration`); IC summed over all L+1 layers;
    votes weighted by IC with random tie-breaking (:func:`xie2024_scores`).

    Rows (subset ``all`` unless said): ``ic_auroc`` (IC telling paths whose
    calibrated final answer is right from wrong ones), ``sc_accuracy``,
    ``ic_weighted_sc_accuracy``, ``path_accuracy`` (mean calibrated score of the
    true answer), ``mean_ic_correct`` / ``mean_ic_incorrect`` (IC / (L+1)),
    ``paths_with_answer``; per layer ``calibrated_agreement`` of correct and incorrect paths.
    """
    handle, data, spec, seed = context.handle, context.data, context.spec, context.seed
    settings: ConsistencySettings = spec.settings
    labels, questions, prompts = xie2024_prompts(data, settings, spec.name)
    outputs = xie2024_sample(handle, prompts, settings, seed)
    probs = xie2024_read(handle, prompts, outputs, settings.answers)
    n_layers = probs.shape[2]
    truth = labels[questions]
    result = xie2024_scores(probs, truth, seed)
    correct, ic = result["correct"].ravel(), result["ic"].ravel()
    rows = []
    for subset, members in (("correct-paths", correct), ("incorrect-paths", ~correct)):
        agreement = result["consistency"].reshape(-1, n_layers)[members].T  # [L+1, paths]
        mean, stderr, count = mean_and_stderr(agreement) if agreement.shape[1] else (np.full(n_layers, np.nan), np.full(n_layers, np.nan), np.zeros(n_layers, int))
        rows += [dict(metric="calibrated_agreement", layer=layer, value=float(mean[layer]), stderr=float(stderr[layer]), n=int(count[layer]),
                      higher_is_better=None, subset=subset) for layer in range(n_layers)]
    with_answer = np.array([any(a.lower() in o.lower() for a in settings.answers) for per in outputs for o in per], dtype=float)
    auroc, auroc_se = auroc_with_stderr(ic, correct, np.repeat(np.arange(len(questions)), result["ic"].shape[1]), seed)
    summary = {
        "ic_auroc": (auroc, len(correct), True),
        "sc_accuracy": (result["sc_accuracy"], len(questions), True),
        "ic_weighted_sc_accuracy": (result["ic_weighted_sc_accuracy"], len(questions), True),
        "path_accuracy": (float(result["score"].mean()), len(correct), True),
        "mean_ic_correct": (mean_where(ic, correct) / n_layers, int(correct.sum()), None),
        "mean_ic_incorrect": (mean_where(ic, ~correct) / n_layers, int((~correct).sum()), None),
        "paths_with_answer": (float(with_answer.mean()), len(with_answer), None),
    }
    return pd.DataFrame(rows + summary_rows(summary, stderr={"ic_auroc": auroc_se}))
