"""Linear merge: Σ w_i φ_i / Σ w_i (a weighted average of the listed models)."""

from __future__ import annotations

from pydantic import Field

from fusion.errors import FusevalError
from fusion.merge.registry import Params, register
from fusion.merge.task_arithmetic import WeightParams


class LinearParams(Params):
    """Global parameters of the linear merge."""

    normalize: bool = Field(default=True, description="Divide by Σ w_i (off: plain weighted sum).")


@register("linear", model_params=WeightParams, global_params=LinearParams, base="optional")
def linear(base, models, model_params, params, ctx):
    """Σ w_i φ_i, divided by Σ w_i when normalize is on."""
    weights = [p.weight for p in model_params]
    out = models[0] * weights[0]
    for m, w in zip(models[1:], weights[1:]):
        out.add_(m, alpha=w)
    if params.normalize:
        total = sum(weights)
        if abs(total) < 1e-12:
            raise FusevalError("linear merge: the weights sum to 0, cannot normalize (set normalize: false)")
        out.div_(total)
    return out
