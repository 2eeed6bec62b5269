"""Linear merge: Σ w_i φ_i / Σ w_i (a weighted average of the listed models)."""

from __future__ import annotations

from pydantic import Field

from fusion.common.errors import FusevalError
from fusion.merge.base import Params, register
from fusion.merge.task_arithmetic import WeightParams


class LinearParams(Params):
    """Global parameters of the linear merge."""

    normalize: bool = Field(default=True, description="Divide by Σ w_i (off: plain weighted sum).")


@register("linear", model_params=WeightParams, global_params=LinearParams, base="optional", elementwise=True)
def linear(base, models, model_params, params, ctx):
    """Σ w_i φ_i, divided by Σ w_i when normalize is on."""
    # Every product rounded on its own, then summed in order (as mergekit's (w * φ).sum(0), to the
    # bit): add_(alpha=w) would fuse multiply and add and round differently. In place: the inputs
    # are the method's.
    weights = [p.weight for p in model_params]
    out = models[0].mul_(weights[0])
    for m, w in zip(models[1:], weights[1:]):
        out.add_(m.mul_(w))
    if params.normalize:
        total = sum(weights)
        if abs(total) < 1e-12:
            raise FusevalError("linear merge: the weights sum to 0, cannot normalize (set normalize: false)")
        if total != 1:  # x / 1 == x exactly: skip the pass
            out.div_(total)
    return out
