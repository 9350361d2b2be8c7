"""The ``mteb`` family: an mteb task evaluated on every layer's pooled states (Skean et al. 2025)."""
from __future__ import annotations

from layerbench.families.registry import Family, Headline, Protocol, ProtocolSettings, register


class MtebSettings(ProtocolSettings):
    """Knobs of the ``mteb`` family (per-layer MTEB, Skean et al. 2025).

    Attributes:
        protocol: ``layerbench`` or ``skean2024`` (the same evaluation; the
            protocol's site and pooling make the difference: a truncated
            model's normed states, mean-pooled).
        normalize: L2-normalize each layer's pooled vectors before mteb sees them.
        eval_splits: splits to evaluate (None: the task's own).
    """

    normalize: bool = False
    eval_splits: list[str] | None = None


FAMILY = register(Family(
    name="mteb",
    description="an mteb task (STS, classification, clustering, retrieval...) on every layer's pooled states (Skean et al. 2025)",
    settings=MtebSettings,
    reads="states",
    evaluator="layerbench.evaluators.mteb:evaluate_mteb",
    sources=("mteb",),
    model_texts="layerbench.data.mteb_tasks:prompted_texts",
    protocols=(Protocol(
        "skean2024", site="normed", pooling="mean",
        reference="Skean et al. 2025, Layer by Layer; github.com/OFSkean/information_flow@a6ad508 "
                  "experiments/utils/model_definitions/mteb_automodel_wrapper.py, experiments/mteb-harness.py: "
                  "a model truncated to l blocks (final norm on every layer, layer 0 included), mean over real tokens",
        # The paper's question: does some intermediate layer beat the last? (Our own gain is in the family's group.) Asked of
        # the layer chosen on half the items and scored on the other half (layerbench.honest_best), and a layer "beats the
        # last" only where that gain's 95% interval lies above 0.
        headlines=(Headline("honest_gain", "MTEB gain"), Headline("honest_gain", "layer beats last", statistic="count_beyond_zero")),
    ),),
))
