"""Lazy package exports: `from package import name` imports the module that defines `name` only when asked.

    __getattr__, __all__ = lazy_exports(__name__, {"run_suite": "harness.run.runner", ...})

A package's public names stay in one place without its `__init__` importing every module (and
their heavy dependencies) up front, and without import circles through the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A module `__getattr__` serving `names` (name -> defining module) and the matching `__all__`."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name]), name)

    return __getattr__, sorted(names)
