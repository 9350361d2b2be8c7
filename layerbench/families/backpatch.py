"""The ``backpatch`` family: multi-hop back-patching on a causal language model (Biran et al. 2024)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from layerbench.families.registry import Family, Headline, Protocol, ProtocolSettings, register


class BackpatchSettings(ProtocolSettings):
    """Knobs of the ``backpatch`` family (multi-hop back-patching, Biran et al. 2024).

    Attributes:
        protocol: ``layerbench`` or ``biran2024`` (the authors' code); the protocol's record sets the four settings below.
        prompt_case: ``capitalized`` (ours: every prompt begins with a capital) or ``as-written`` (the authors': lowercase
            relation phrases as the data writes them).
        answer_match: ``whole-word`` (ours: the label or any alias, as a whole word, ignoring case) or ``substring`` (the
            authors': the label or an alias longer than one character, as a substring of the stripped continuation with
            newlines as spaces, ignoring case).
        first_layer: the lowest source and target layer: 0 (ours: the embedding output and every block output) or 1 (the
            authors': the block outputs 1..L, their ``model.layers`` 0..L-1).
        relation_shortcut: the prompt of the relation-shortcut check: ``placeholder`` (ours: the composed relations around a
            placeholder entity) or ``empty-slot`` (the authors' ``evaluate_dataset.py``: r2's phrase around r1's phrase with
            an empty slot, its last four characters cut, where the query has r2's phrase; else ours).
        max_new_tokens: greedy tokens generated per check and per patched variant.
        positions: where states are patched: ``e1-last`` (the last token of the
            source entity) and/or ``prompt-last`` (the last token of the prompt).
        forward_patching: also patch from earlier into later layers (ls < lt), for comparison.
        layer_step: sweep every k-th layer as source and target (1: all layers;
            the last layer is always included).
        sweep: which queries the sweep runs on: ``known-hops`` (the paper's
            filter: both single hops answered, neither shortcut gives the
            answer) or ``all``.
        batch_size: patched variants per forward pass.
    """

    prompt_case: Literal["capitalized", "as-written"] = "capitalized"
    answer_match: Literal["whole-word", "substring"] = "whole-word"
    first_layer: int = Field(default=0, ge=0)
    relation_shortcut: Literal["placeholder", "empty-slot"] = "placeholder"
    max_new_tokens: int = Field(default=10, ge=1)
    positions: list[Literal["e1-last", "prompt-last"]] = Field(default=["e1-last", "prompt-last"], min_length=1)
    forward_patching: bool = False
    layer_step: int = Field(default=1, ge=1)
    sweep: Literal["known-hops", "all"] = "known-hops"
    batch_size: int = Field(default=128, ge=1)


FAMILY = register(Family(
    name="backpatch",
    description="two-hop queries: the hops, the shortcuts, the logit lens, and states patched from later into earlier layers (Biran et al. 2024)",
    settings=BackpatchSettings,
    reads="model",
    evaluator="layerbench.evaluators.backpatch:evaluate_backpatch",
    causal_lm_only=True,
    headlines=(Headline(
        "oracle_fix_rate", "fix rate", metric="oracle_fix_rate", rests_on="queries", interval="wilson",
        # A rate over fewer wrong queries moves by more than 0.05 with one query: not a number to rank models by.
        min_n=20,
        about="The oracle fix rate: of the two-hop queries whose hops the model knows but whose composition it gets wrong, the share "
              "that writing some later layer's state into an earlier one fixes (Biran et al. 2024); n = such queries.",
    ),),
    protocols=(Protocol(
        "biran2024", site="residual",
        settings={"prompt_case": "as-written", "answer_match": "substring", "first_layer": 1, "relation_shortcut": "empty-slot",
                  "max_new_tokens": 10, "positions": ["e1-last", "prompt-last"], "layer_step": 1, "sweep": "known-hops"},
        reference="Biran et al. 2024, Hopping Too Late; github.com/edenbiran/HoppingTooLate@dfc1ec6 src/patch_activations.py, "
                  "src/patched_generation.py, src/evaluate_dataset.py, src/classify_results.py, src/analyze_results.py, src/utils.py: "
                  "prompts as written (lowercase relation phrases), answers as substrings of the label and aliases longer than one "
                  "character, block outputs 1..L as source and target (ls > lt), oracle for initially correct and incorrect queries",
    ),),
))
