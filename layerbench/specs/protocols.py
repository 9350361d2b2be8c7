"""Named protocols: our own default, and each paper's released code, one option away.

A protocol fixes how a task family measures: which capture site and pooling
give a layer's vector, and the family settings that follow the paper's code
(split, prompts, answer matching, read position, calibration, sampling).
``layerbench run --protocol jin2024`` (or a spec's ``evaluator: {protocol:
jin2024}``) runs a task the way the authors' released code does; every row
carries its ``protocol`` and ``site``, so one results folder holds both.

The presets below are facts read from the authors' repositories (the files are
named in each ``reference``); where our default differs, the README says why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerbench.errors import UserError

OURS = "layerbench"
# "paper": each task family's paper protocol (a task whose family has none is skipped).
PAPER = "paper"


@dataclass(frozen=True)
class Protocol:
    """A named way to run one task family.

    Attributes:
        name: what ``--protocol`` takes and rows carry.
        family: the family it applies to (None: every family, ours).
        site: the capture site that gives a layer's vector (None: the task's).
        pooling: the pooling (None: the task's).
        settings: family settings it fixes, over the spec's (``protocol`` included).
        reference: the paper, its repository at a commit, and the files read.
    """

    name: str
    family: str | None
    site: str | None
    pooling: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    reference: str = ""


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(OURS, None, None, None, {}, "layerbench's defaults (README: where they differ from each paper, and why)"),
        Protocol(
            "jin2024", "probe", "mlp-input", "last", {"protocol": "jin2024"},
            "Jin et al. 2024, Exploring Concept Depth; github.com/Luckfort/CD@4902d58 main.py, utils.py, dataset.py: "
            "post_attention_layernorm outputs (L vectors), last token, texts grouped by class before one "
            "train_test_split(test_size=0.4, random_state=42), LogisticRegression(penalty='l2')",
        ),
        Protocol(
            "skean2024", "mteb", "normed", "mean", {"protocol": "skean2024"},
            "Skean et al. 2025, Layer by Layer; github.com/OFSkean/information_flow@a6ad508 "
            "experiments/utils/model_definitions/mteb_automodel_wrapper.py, experiments/mteb-harness.py: "
            "a model truncated to l blocks (final norm on every layer, layer 0 included), mean over real tokens",
        ),
        Protocol(
            "biran2024", "backpatch", "residual", None,
            {"protocol": "biran2024", "max_new_tokens": 10, "positions": ["e1-last", "prompt-last"], "layer_step": 1, "sweep": "known-hops"},
            "Biran et al. 2024, Hopping Too Late; github.com/edenbiran/HoppingTooLate@dfc1ec6 src/patch_activations.py, "
            "src/patched_generation.py, src/evaluate_dataset.py, src/classify_results.py, src/analyze_results.py, src/utils.py: "
            "prompts as written (lowercase relation phrases), answers as substrings of the label and aliases longer than one "
            "character, block outputs 1..L as source and target (ls > lt), oracle for initially correct and incorrect queries",
        ),
        Protocol(
            "xie2024", "consistency", "residual", None,
            {"protocol": "xie2024", "paths": 20, "seeds": 2, "max_new_tokens": 512, "temperature": 0.7, "top_p": 0.95, "first_layer": 0},
            "Xie et al. 2024, Calibrating Reasoning in Language Models with Internal Consistency; "
            "github.com/zhxieml/internal-consistency@7ea418b decode.py, extract.py, eval_sc.py, src/datasets/fewshot_dataset.py: "
            "2 seeds x 20 paths of up to 512 tokens, lens at the last token of the path with its last sentence dropped, "
            "median calibration per vote index, IC summed over all L+1 layers, weighted votes with random tie-breaking",
        ),
    )
}
# The paper protocol of each family that has one.
PAPER_OF_FAMILY = {p.family: p.name for p in PROTOCOLS.values() if p.family is not None}


def get_protocol(name: str) -> Protocol:
    """The protocol ``name``; an unknown name is a :class:`UserError`."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol '{name}'; use {PAPER} or one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def check_protocol_names(names: list[str]) -> list[str]:
    """``names`` without repeats, each a protocol or ``paper``; anything else is a :class:`UserError`."""
    for name in names:
        if name != PAPER:
            get_protocol(name)
    return list(dict.fromkeys(names))


def resolve_protocol(name: str, family: str) -> Protocol | None:
    """The protocol ``name`` (or ``paper``) means for a task of ``family``, or None when the family has no such protocol."""
    if name == PAPER:
        name = PAPER_OF_FAMILY.get(family, "")
        if not name:
            return None
    protocol = get_protocol(name)
    return protocol if protocol.family in (None, family) else None


def variant_suffix(protocol: str, site: str) -> str:
    """The name suffix of a task run under ``protocol`` at ``site``: empty for ours on the residual stream, else ``@<protocol>``
    and/or the site when it is not the protocol's own (``@jin2024``, ``@normed``, ``@jin2024+residual``).

    Result files carry it (``<task>@jin2024.parquet``), and so do the leaderboard's task names.
    """
    parts = [protocol] if protocol != OURS else []
    if site != (PROTOCOLS[protocol].site if protocol in PROTOCOLS and PROTOCOLS[protocol].site else "residual"):
        parts.append(site)
    return "@" + "+".join(parts) if parts else ""


def base_task(name: str) -> str:
    """A task name without its variant suffix (``mteb-lee-sts@skean2024`` -> ``mteb-lee-sts``)."""
    return name.split("@", 1)[0]
