"""Task families: each one record in a registry (:mod:`layerbench.families.registry`), defined by one module of this package.

Importing the package imports every module in it, so a family module added
here registers itself with no other change.
"""
from __future__ import annotations

import importlib
import pkgutil

from layerbench.families.registry import (
    OURS,
    EvaluatorContext,
    Family,
    Headline,
    Protocol,
    ProtocolSettings,
    Strict,
    add_protocol,
    all_families,
    all_headlines,
    check_family_name,
    get_family,
    register,
)

__all__ = ["OURS", "EvaluatorContext", "Family", "Headline", "Protocol", "ProtocolSettings", "Strict", "add_protocol", "all_families", "all_headlines",
           "check_family_name", "get_family", "register"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")
