"""The ``similarity`` family: how similar a model's layers are to one another (Kornblith et al. 2019; Huh et al. 2024)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from layerbench.families.registry import Family, Headline, ProtocolSettings, register


class SimilaritySettings(ProtocolSettings):
    """Knobs of the ``similarity`` family.

    Attributes:
        measures: what is computed: ``cka`` (linear CKA, its layer x layer map and curves), ``mutual_knn`` (mutual
            k-NN alignment, map and curves), ``cknna`` (CKNNA, the curves only: it has no per-layer summary to share, so
            a map costs a measure per pair).
        unbiased: CKA from Song et al.'s unbiased HSIC (near 0 for unrelated data at any N/D); False: the biased form.
        k: neighbours of mutual k-NN and CKNNA (platonic-rep's 10).
        settled_at: the settling depth is the first layer from which every later layer's CKA to the last is at least this.
            0.5, not 0.9: a decoder's last layer is read through its final norm, whose per-dimension gains alone keep
            every earlier layer's CKA to it below 0.9 (SmolLM2's best is 0.65, MiniLM's 0.70), so 0.9 would put every
            committed model at depth 1.
        half_samples: random halves of the texts for the standard errors of the CKA curves and the settling depth
            (a delete-half jackknife: the spread of the half-sample values is the full estimate's standard error).
        clamp_quantile: every value of a layer's states clamped to +-the q-th quantile of their absolute values before any
            measure (platonic-rep's ``prepare_features(q=0.95, exact=True)``); None: the states as captured. Mean-pooled
            decoder states carry a few massive activations (SmolLM2's dimension 507 holds 98% of the variance across texts
            at layer 15) that would otherwise make every middle layer look the same.
        seed: the null's shuffle and the halves.
        sketch_rank: each layer's centred Gram matrix is kept as its this many largest eigenpairs (float16 vectors,
            :class:`~layerbench.metrics.similarity.GramSketch`), with its k-NN lists, so that later models and checkpoints
            are compared with this one without capturing it again (:mod:`layerbench.across_models`); 0: keep none. 128:
            on the committed models' layers (1,000 texts) the sketched CKA is at most 0.037 off the full one (mean 0.010),
            64 gives 0.039 at half the size; 276 kB per layer.
    """

    measures: list[Literal["cka", "mutual_knn", "cknna"]] = Field(default=["cka", "mutual_knn"], min_length=1)
    unbiased: bool = True
    k: int = Field(default=10, ge=1)
    settled_at: float = Field(default=0.5, gt=0, le=1)
    half_samples: int = Field(default=50, ge=2)
    clamp_quantile: float | None = Field(default=0.95, gt=0, le=1)
    seed: int = 0
    sketch_rank: int = Field(default=128, ge=0)


FAMILY = register(Family(
    name="similarity",
    description="how similar each layer is to the others: layer x layer maps (linear CKA, mutual k-NN), each layer to the previous and "
                "to the last, a shuffled null, and the depth where the layers stop changing (Kornblith et al. 2019; Huh et al. 2024)",
    settings=SimilaritySettings,
    reads="states",
    evaluator="layerbench.evaluators.similarity:evaluate_similarity",
    across_models="layerbench.across_models:write_across_models",
    headlines=(Headline(
        "settling_depth", "settling depth", metric="settling_depth", rests_on="texts",
        about="The settling depth: the relative depth from which every layer's linear CKA (unbiased) to the last layer is at least 0.5, "
              "on 1,000 mixed sentences: where the model's final representation takes shape; n = texts.",
    ),),
))
