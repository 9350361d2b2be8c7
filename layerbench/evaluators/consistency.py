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
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import torch

from layerbench.data.dataset import TextDataset
from layerbench.errors import UserError
from layerbench.evaluators.probe import SUMMARY_LAYER
from layerbench.models.generation import generate
from layerbench.models.loading import ModelHandle
from layerbench.models.residual import continuation_states, first_token_id, lens_logits
from layerbench.specs.schema import ConsistencySettings, TaskSpec

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


def _weighted_vote(answers: np.ndarray, weights: np.ndarray) -> bool:
    """The answer with more weight (ties go to True, the first answer)."""
    return float(weights[answers].sum()) >= float(weights[~answers].sum())


def question_prompts(data: TextDataset, settings: ConsistencySettings, task: str) -> tuple[np.ndarray, list[int], list[str]]:
    """The items' truth (``[N]`` booleans), the indices of the items asked, and their few-shot prompts.

    The worked examples are the spec's ``exemplars`` if it gives them (every
    item is then asked), else the first ``shots`` items of alternating labels
    with a ``rationale`` record (left out of the questions).
    """
    if data.labels is None:
        raise UserError(f"task '{task}': internal consistency needs true/false labels")
    labels = np.array([str(v).lower() == "true" for v in data.labels])
    first, second = settings.answers
    if settings.exemplars:
        exemplars = [(e.question, e.rationale, first if e.answer else second) for e in settings.exemplars]
        order: list[int] = []
    else:
        if data.records is None or any("rationale" not in r for r in data.records):
            raise UserError(f"task '{task}': internal consistency needs a worked 'rationale' per item, or 'exemplars' in the evaluator settings")
        order = [i for pair in zip(np.flatnonzero(labels), np.flatnonzero(~labels)) for i in pair][: settings.shots]
        exemplars = [(data.texts[i], data.records[i]["rationale"], first if labels[i] else second) for i in order]
    questions = [i for i in range(len(data)) if i not in set(order)]
    if not questions:
        raise UserError(f"task '{task}': no questions left after taking {settings.shots} worked examples")
    return labels, questions, [few_shot_prompt(exemplars, data.texts[i]) for i in questions]


def evaluate_consistency(handle: ModelHandle, data: TextDataset, spec: TaskSpec, seed: int) -> pd.DataFrame:
    """Sample paths, read every layer's latent answer with the logit lens, and score internal consistency (module docstring)."""
    settings: ConsistencySettings = spec.settings
    labels, questions, prompts = question_prompts(data, settings, spec.name)
    stops = ["answer is", "\n\n", "\nQ:"]  # what cut_path cuts at: nothing after it is read
    sampled = generate(handle, prompts, settings.max_new_tokens, batch_size=max(1, 32 // settings.paths), sample=True,
                       temperature=settings.temperature, top_p=settings.top_p, num_return_sequences=settings.paths, seed=seed, stop_strings=stops)
    greedy = generate(handle, prompts, settings.max_new_tokens, batch_size=16, stop_strings=stops)
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
    answer_ids = [first_token_id(handle, answer) for answer in settings.answers]
    with torch.no_grad():
        logits = torch.stack([lens_logits(handle, states[layer])[:, answer_ids] for layer in range(states.shape[0])])  # [L+1, P, 2]
    p_true = torch.softmax(logits, dim=-1)[..., 0].numpy()
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
                agree = (latent == reference)[members].astype(float)
                n = len(agree)
                rows.append(dict(metric=metric, layer=layer, value=float(agree.mean()) if n else float("nan"),
                                 stderr=float(agree.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), n=n, higher_is_better=None, subset=subset))

    sc, weighted = [], []
    for q in range(len(questions)):
        mine = slice(q * settings.paths, (q + 1) * settings.paths)
        sc.append(_weighted_vote(final[mine], np.ones(settings.paths)) == labels[questions[q]])
        weighted.append(_weighted_vote(final[mine], ic[mine]) == labels[questions[q]])
    reached = np.array([done for _, (_, done) in paths[:n_sampled]], dtype=float)
    summary = {
        "ic_auroc": (_auroc(ic, ok), len(ok), True),
        "plain_ic_auroc": (_auroc(plain, ok), len(ok), True),
        "path_accuracy": (float(ok.mean()), len(ok), True),
        "greedy_accuracy": (float(correct[n_sampled:].mean()), len(questions), True),
        "sc_accuracy": (float(np.mean(sc)), len(questions), True),
        "ic_weighted_sc_accuracy": (float(np.mean(weighted)), len(questions), True),
        "mean_ic_correct": (float(ic[ok].mean()) if ok.any() else float("nan"), int(ok.sum()), None),
        "mean_ic_incorrect": (float(ic[~ok].mean()) if (~ok).any() else float("nan"), int((~ok).sum()), None),
        "paths_with_answer": (float(reached.mean()), len(reached), None),
    }
    rows += [dict(metric=m, layer=SUMMARY_LAYER, value=v, stderr=float("nan"), n=n, higher_is_better=h, subset="all") for m, (v, n, h) in summary.items()]
    return pd.DataFrame(rows)
