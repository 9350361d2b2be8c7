"""The ``probe`` family: concept-depth probing of pooled states, layer by layer (Jin et al. 2024)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from layerbench.families.registry import Family, Headline, Protocol, ProtocolSettings, register


class ProbeSettings(ProtocolSettings):
    """Knobs of the ``probe`` family (concept-depth probing, Jin et al. 2024).

    Attributes:
        protocol: ``layerbench`` or ``jin2024`` (the authors' code); the protocol's record sets ``split`` and ``probe``.
        split: ``stratified-k-fold`` (ours: ``folds`` stratified folds, shuffled with the run's seed, grouped where the
            data has groups; mean and standard error over folds, and concept depth per fold) or ``single-split`` (the
            authors': the texts grouped by class in the order of the spec's ``labels``, then
            ``train_test_split(test_size=test_size, random_state=split_random_state + r)`` for r < ``repeats``).
        probe: ``standardized-l2`` (ours: features standardized on the training part, logistic regression with ``C``
            and ``max_iter``) or ``sklearn-default`` (the authors': scikit-learn's default ``LogisticRegression()``, no scaling).
        folds: k of the k-fold split.
        repeats: single split only: splits with ``random_state`` 42, 43, ...
            (1, the paper's, gives no spread; more give the mean and standard
            error over splits, for accuracy and concept depth alike).
        test_size: single split only: the share of items tested.
        split_random_state: single split only: the first split's ``random_state`` (the authors' 42).
        C: inverse L2 strength of the standardized probe.
        max_iter: solver iterations of the standardized probe.
        jump_delta: the jumping point is the first layer whose accuracy rises
            by at least this much over the layer before (our definition).
        converge_epsilon: the converging point is the first layer within this
            much of the best accuracy (our definition).
    """

    split: Literal["stratified-k-fold", "single-split"] = "stratified-k-fold"
    probe: Literal["standardized-l2", "sklearn-default"] = "standardized-l2"
    folds: int = Field(default=5, ge=2)
    repeats: int = Field(default=1, ge=1)
    test_size: float = Field(default=0.4, gt=0, lt=1)
    split_random_state: int = 42
    C: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=1000, ge=1)
    jump_delta: float = Field(default=0.1, gt=0, le=1)
    converge_epsilon: float = Field(default=0.01, ge=0, le=1)


def check_limits(spec: Any, limit: int | None) -> list[str]:
    """A k-fold split needs ``folds`` examples of every class: a ``--limit`` (split evenly over the spec's classes) below
    ``folds`` x classes cannot give them, whatever the data holds."""
    settings = spec.settings
    if settings.split != "stratified-k-fold" or limit is None or not spec.labels:
        return []
    classes = len(spec.labels)
    if limit // classes >= settings.folds:
        return []
    return [f"task '{spec.name}': --limit {limit} leaves at most {limit // classes} examples of each of its {classes} classes; "
            f"{settings.folds}-fold cross-validation needs {settings.folds} (a --limit of at least {settings.folds * classes})"]


FAMILY = register(Family(
    name="probe",
    description="a linear probe per layer on the pooled states (accuracy, F1, AUROC) and the concept depth (Jin et al. 2024)",
    settings=ProbeSettings,
    reads="states",
    evaluator="layerbench.evaluators.probe:evaluate_probe",
    robustness=True,
    # The family's group on the index says what the depth is (leaderboard/schema.yaml: its best, last and gain columns too).
    headlines=(Headline("concept_depth", "concept depth", metric="converging_depth"),),
    classes=True,
    preflight=f"{__name__}:check_limits",
    protocols=(Protocol(
        "jin2024", site="mlp-input", pooling="last", settings={"split": "single-split", "probe": "sklearn-default"},
        reference="Jin et al. 2024, Exploring Concept Depth; github.com/Luckfort/CD@4902d58 main.py, utils.py, dataset.py: "
                  "post_attention_layernorm outputs (L vectors), last token, texts grouped by class before one "
                  "train_test_split(test_size=0.4, random_state=42), LogisticRegression(penalty='l2')",
    ),),
))
