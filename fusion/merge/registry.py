"""Merge methods by name: importing this module registers every method (see `fusion.merge.base`).

    method = get_method("ties")    # a MergeMethod: fn, parameter models, base policy
"""

from __future__ import annotations

from fusion.common.errors import FusevalError
from fusion.merge import breadcrumbs, dare, della, linear, model_stock, sce, slerp, task_arithmetic, ties, varm
from fusion.merge.base import METHODS, MergeMethod

__all__ = ["METHODS", "get_method"]

# Importing these modules registered their methods in METHODS (at the top of this file, so the
# table is complete before anyone looks a method up).
METHOD_MODULES = (breadcrumbs, dare, della, linear, model_stock, sce, slerp, task_arithmetic, ties, varm)


def get_method(name: str) -> MergeMethod:
    """Look a method up by name, with an error listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise FusevalError(f"unknown merge_method {name!r} (known: {', '.join(sorted(METHODS))})") from None
