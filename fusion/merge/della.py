"""DELLA: MagPrune drops entries with probabilities that fall as magnitude rank rises, then combines."""

from __future__ import annotations

from pydantic import Field, model_validator

from fusion.merge.base import register
from fusion.merge.dare import DareParams
from fusion.merge.sparsify import rank_sampling
from fusion.merge.task_arithmetic import combine_weighted, deltas_in_place
from fusion.merge.ties import DensityParams


class DellaModelParams(DensityParams):
    """Per-model parameters of DELLA."""

    epsilon: float = Field(default=0.15, ge=0.0, le=1.0,
                           description="Keep probabilities span density ± epsilon by magnitude rank.")

    @model_validator(mode="after")
    def _window_inside_unit(self):
        if self.density < 1.0 and not (0.0 <= self.density - self.epsilon and self.density + self.epsilon <= 1.0):
            raise ValueError(f"density ± epsilon must lie in [0, 1] (density {self.density}, epsilon {self.epsilon})")
        return self


class DellaTiesParams(DareParams):
    """Global parameters of DELLA with sign election (normalize on)."""

    normalize: bool = Field(default=True, description="Divide by the sum of weights of the agreeing models.")


def _pruned(base, models, model_params, params, ctx):
    return [rank_sampling(d, p.density, p.epsilon, ctx.rng, params.rescale)
            for d, p in zip(deltas_in_place(base, models), model_params)]


@register("della", model_params=DellaModelParams, global_params=DellaTiesParams)
def della(base, models, model_params, params, ctx):
    """TIES sign election over MagPrune-sparsified deltas."""
    deltas = _pruned(base, models, model_params, params, ctx)
    return combine_weighted(base, deltas, model_params, params, consensus=True)


@register("della_linear", model_params=DellaModelParams, global_params=DareParams)
def della_linear(base, models, model_params, params, ctx):
    """θ + λ Σ w_i MagPrune(δ_i)."""
    deltas = _pruned(base, models, model_params, params, ctx)
    return combine_weighted(base, deltas, model_params, params, consensus=False)
