"""Protocols by name: ours, and the papers' protocols each family carries (:class:`layerbench.families.Protocol`).

A family's module lists its papers' protocols (site, pooling, settings, the
code they follow, and the function that runs one where it is not the
family's evaluator); nothing here names one. These helpers resolve what
``--protocol`` asks for and name the variants a task runs in.
"""
from __future__ import annotations

from layerbench.errors import UserError
from layerbench.families import OURS, Protocol, all_families

# "paper": each task family's paper protocol (a task whose family has none is skipped).
PAPER = "paper"


def all_protocols() -> dict[str, Protocol]:
    """Every protocol by name: ours first, then each family's, in family order."""
    return {OURS.name: OURS} | {p.name: p for family in all_families().values() for p in family.protocols}


def get_protocol(name: str) -> Protocol:
    """The protocol ``name``; an unknown name is a :class:`UserError` that lists the known ones."""
    protocols = all_protocols()
    if name not in protocols:
        raise UserError(f"unknown protocol '{name}'; use {PAPER} or one of {', '.join(protocols)}")
    return protocols[name]


def check_protocol_names(names: list[str]) -> list[str]:
    """``names`` without repeats, each a protocol or ``paper``; anything else is a :class:`UserError`."""
    for name in names:
        if name != PAPER:
            get_protocol(name)
    return list(dict.fromkeys(names))


def resolve_protocol(name: str, family: str) -> Protocol | None:
    """The protocol ``name`` (or ``paper``: the family's first) means for a task of ``family``, or None when the family has no such protocol."""
    if name == PAPER:
        papers = all_families()[family].protocols if family in all_families() else ()
        return papers[0] if papers else None
    protocol = get_protocol(name)
    return protocol if protocol.family in (None, family) else None


def variant_suffix(protocol: str, site: str) -> str:
    """The name suffix of a task run under ``protocol`` at ``site``: empty for ours on the residual stream, else ``@<protocol>``
    and/or the site when it is not the protocol's own (``@<protocol>``, ``@normed``, ``@<protocol>+residual``).

    Result files carry it (``<task>@<protocol>.parquet``), and so do the leaderboard's task names.
    """
    parts = [protocol] if protocol != OURS.name else []
    known = all_protocols().get(protocol)
    if site != (known.site if known is not None and known.site else "residual"):
        parts.append(site)
    return "@" + "+".join(parts) if parts else ""


def base_task(name: str) -> str:
    """A task name without its variant suffix (``mteb-lee-sts@<protocol>`` -> ``mteb-lee-sts``)."""
    return name.split("@", 1)[0]
