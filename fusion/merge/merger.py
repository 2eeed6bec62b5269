"""Merge one planned tensor (or one block of it): the method call, NaN/Inf checks, diagnostics.

    merger = TensorMerger(plan)
    out = merger.merged(tensor_plan, base, models)    # raises naming the input or the method
    merger.diagnostics                                # per tensor, what the method noted

Shared by the whole-tensor path (`fusion.merge.pipeline`) and the merge lanes
(`fusion.merge.streaming`), which call it from several threads at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
import torch

from fusion.common.errors import FusevalError
from fusion.common.hashing import derived_seed
from fusion.io import dtype_name
from fusion.merge.base import TensorContext
from fusion.merge.plan import MergePlan, TensorPlan


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf in `t` (always true for integer tensors)."""
    # A NaN or Inf anywhere makes the sum non-finite; only then (or on overflow) look element-wise.
    return not t.is_floating_point() or bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_finite(t: torch.Tensor, what: str) -> None:
    """Raise, naming `what`, if `t` holds a NaN or Inf."""
    if not all_finite(t):
        raise FusevalError(f"{what} contains NaN or Inf")


@dataclass
class TensorMerger:
    """Calls the plan's method on a tensor's inputs and collects what the method notes per tensor."""

    plan: MergePlan
    diagnostics: dict[str, dict] = field(default_factory=dict)

    def merged(self, p: TensorPlan, b: torch.Tensor | None, models: list[torch.Tensor],
               check: bool = True) -> torch.Tensor:
        """The method's result for `p` (inputs in the compute dtype; the method may overwrite them)."""
        method = self.plan.method
        rng = None
        if not method.elementwise:
            rng = np.random.Generator(np.random.PCG64(derived_seed(self.plan.cfg.seed, p.name)))
        ctx = TensorContext(p.name, rng)
        out = method.fn(b, models, list(p.model_params), p.params, ctx)
        if check and not all_finite(out):
            self.not_finite(p, [])
        if ctx.notes:
            self.diagnostics[p.name] = ctx.notes
        return out

    def not_finite(self, p: TensorPlan, unchecked: list[torch.Tensor]) -> NoReturn:
        """Raise for a result with NaN or Inf, naming the input that has some if there is one."""
        # `unchecked`: the inputs, when they were not checked for NaN/Inf before the merge.
        for inp, t in zip(self.plan.sources, unchecked):  # a bad input is the better message
            check_finite(t, f"{inp.reader.path}: tensor {p.name!r}")
        raise FusevalError(f"{self.plan.source}: merge result ({self.plan.method.name}) for tensor {p.name!r} "
                           "contains NaN or Inf")

    def overflow(self, p: TensorPlan) -> FusevalError:
        """The error for a result that is finite in the compute dtype but not in the written one."""
        # The result is finite in the compute dtype; a narrower written dtype can still overflow to Inf.
        return FusevalError(f"{self.plan.source}: merge result for tensor {p.name!r} exceeds the range of "
                            f"{dtype_name(p.out_dtype)} (largest {torch.finfo(p.out_dtype).max:g}); "
                            "write a wider dtype (--dtype / out_dtype)")
