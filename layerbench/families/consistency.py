"""The ``consistency`` family: internal consistency of sampled reasoning paths under the logit lens (Xie et al. 2024)."""
from __future__ import annotations

from pydantic import Field

from layerbench.families.registry import Family, Headline, Protocol, ProtocolSettings, Strict, register


class WorkedExample(Strict):
    """A few-shot exemplar for chain-of-thought prompts: a question (and its context), its worked reasoning and its true/false answer."""

    question: str = Field(min_length=1)
    rationale: str = Field(min_length=1)
    answer: bool
    context: str | None = None


class ConsistencySettings(ProtocolSettings):
    """Knobs of the ``consistency`` family (internal consistency, Xie et al. 2024).

    Attributes:
        protocol: ``layerbench`` (each path cut before its answer and
            followed by " So the answer is"; one calibration over all paths;
            IC the share of layers ``first_layer..L`` that agree) or
            ``xie2024`` (the authors' code: "{context}\nQ: {question}\nA: {chain} {answer}"
            exemplars, paths stop at their first newline, the lens reads the last token of
            the path with its last sentence dropped and no cue, calibration at the
            median per layer and answer over the questions, separately for each
            vote index; IC the sum over all L+1 layers; correctness by the
            calibrated final answer; votes weighted by IC, ties broken at random
            over 100 permutations).
        paths: K reasoning paths sampled per question and seed.
        seeds: sampling rounds of K paths each (Xie et al.: 2 seeds x 20 paths).
        max_new_tokens: the longest reasoning path, in tokens.
        temperature, top_p: the sampling of the paths.
        shots: worked examples in the few-shot chain-of-thought prompt, taken
            from the data (items with a ``rationale`` record, alternating labels).
        exemplars: worked examples written in the spec instead, for data sets
            without rationales (BoolQ); then every item is a question. Items
            whose record carries its own ``exemplars`` (Xie et al.'s ProntoQA
            and ProofWriter files) use those.
        answers: the two answer words the lens compares (the first means label True).
        first_layer: layers below this one are left out of the agreement (the
            embedding output says nothing about the answer); IC counts layers
            ``first_layer .. L``.
    """

    paths: int = Field(default=8, ge=1)
    seeds: int = Field(default=1, ge=1)
    max_new_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.7, gt=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    shots: int = Field(default=3, ge=0)
    exemplars: list[WorkedExample] = []
    answers: tuple[str, str] = ("True", "False")
    first_layer: int = Field(default=1, ge=0)


FAMILY = register(Family(
    name="consistency",
    description="sampled reasoning paths: does each layer's latent answer (logit lens) agree with the final one, and does that agreement tell right from wrong (Xie et al. 2024)",
    settings=ConsistencySettings,
    reads="model",
    evaluator="layerbench.evaluators.consistency:evaluate_consistency",
    causal_lm_only=True,
    headlines=(Headline(
        "ic_auroc", "IC AUROC", metric="ic_auroc", rests_on="paths",
        about="IC AUROC: how well the agreement of the layers' latent answers tells correct from incorrect reasoning paths "
              "(Xie et al. 2024); n = paths.",
    ),),
    classes=True,
    protocols=(Protocol(
        "xie2024", site="residual",
        settings={"paths": 20, "seeds": 2, "max_new_tokens": 512, "temperature": 0.7, "top_p": 0.95, "first_layer": 0},
        evaluator="layerbench.evaluators.consistency:evaluate_xie2024",
        reference="Xie et al. 2024, Calibrating Reasoning in Language Models with Internal Consistency; "
                  "github.com/zhxieml/internal-consistency@7ea418b decode.py, extract.py, eval_sc.py, src/datasets/fewshot_dataset.py: "
                  "2 seeds x 20 paths of up to 512 tokens, lens at the last token of the path with its last sentence dropped, "
                  "median calibration per vote index, IC summed over all L+1 layers, weighted votes with random tie-breaking",
    ),),
))
