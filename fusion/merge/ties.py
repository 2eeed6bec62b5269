"""TIES: trim each delta to its top-`density` magnitudes, elect a sign per entry, average the agreeing ones."""

from __future__ import annotations

from pydantic import Field

from fusion.merge.base import register
from fusion.merge.sparsify import magnitude
from fusion.merge.task_arithmetic import TaskArithmeticParams, WeightParams, combine_weighted, deltas_in_place


class DensityParams(WeightParams):
    """Per-model parameters: weight and the kept fraction of the delta."""

    density: float = Field(default=1.0, ge=0.0, le=1.0, description="Fraction of delta entries kept.")


class TiesParams(TaskArithmeticParams):
    """Global parameters of TIES (normalize on: divide by the agreeing models' weights)."""

    normalize: bool = Field(default=True, description="Divide by the sum of weights of the agreeing models.")


@register("ties", model_params=DensityParams, global_params=TiesParams)
def ties(base, models, model_params, params, ctx):
    """θ + λ Σ_{agree} w_i δ̂_i / Σ_{agree} w_i with δ̂_i the top-density entries of δ_i."""
    deltas = [magnitude(d, p.density) for d, p in zip(deltas_in_place(base, models), model_params)]
    return combine_weighted(base, deltas, model_params, params, consensus=True)
