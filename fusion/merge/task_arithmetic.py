"""Task arithmetic, θ + λ Σ w_i δ_i, and the shared delta combination used by TIES, DARE, breadcrumbs, DELLA."""

from __future__ import annotations

import torch
from pydantic import Field

from fusion.merge.registry import Params, register


class WeightParams(Params):
    """Per-model parameters of the task-vector methods."""

    weight: float = Field(description="w_i, the weight of this model (required, as in mergekit).")


class TaskArithmeticParams(Params):
    """Global parameters of task arithmetic."""

    model_config = Params.model_config | {"populate_by_name": True}
    lambda_: float = Field(default=1.0, alias="lambda", description="λ, scale of the merged delta.")
    normalize: bool = Field(default=False, description="Divide the weighted sum by Σ w_i.")
    int8_mask: bool = Field(default=False, description="Accepted for mergekit compatibility; masks are boolean here anyway.")


def elect_sign_mask(weighted: torch.Tensor) -> torch.Tensor:
    """TIES sign election over stacked weighted deltas [n, ...]: mask of entries agreeing with sign(Σ)."""
    elected = torch.where(weighted.sum(dim=0) >= 0, 1.0, -1.0).to(weighted.dtype)
    return torch.sign(weighted) == elected


def combine_deltas(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float], *, consensus: bool,
                   normalize: bool, lam: float) -> torch.Tensor:
    """θ + λ · Σ w_i δ_i [· agreement mask] [/ Σ of the weights that contributed]."""
    d = torch.stack(deltas)  # [n, *shape]
    w = torch.tensor(weights, dtype=d.dtype, device=d.device).view(-1, *([1] * base.dim()))
    weighted = d * w
    if consensus:
        mask = elect_sign_mask(weighted)
        weighted = weighted * mask
        divisor = (w * mask).sum(dim=0)
    else:
        divisor = w.sum(dim=0).expand(base.shape)
    mixed = weighted.sum(dim=0)
    if normalize:
        # Entries where no model agrees keep the base (mergekit's guards: exact 0 under sign
        # election, |Σw| < 1e-8 without it).
        tiny = divisor == 0 if consensus else divisor.abs() < 1e-8
        mixed = mixed / torch.where(tiny, torch.ones_like(divisor), divisor)
    return base + lam * mixed


@register("task_arithmetic", model_params=WeightParams, global_params=TaskArithmeticParams)
def task_arithmetic(base, models, model_params, params, ctx):
    """θ + λ Σ w_i (φ_i − θ)."""
    deltas = [m - base for m in models]
    return combine_deltas(base, deltas, [p.weight for p in model_params], consensus=False,
                          normalize=params.normalize, lam=params.lambda_)
