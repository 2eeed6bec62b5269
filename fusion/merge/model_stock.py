"""Model Stock: pull the average of the models toward the base by t = k·cosθ / (1 + (k−1)·cosθ)."""

from __future__ import annotations

import itertools

import torch
from pydantic import Field

from fusion.merge.base import Params, register


class ModelStockParams(Params):
    """Global parameters of Model Stock."""

    filter_wise: bool = Field(default=False, description="Compute cosθ and t per row (last dim) instead of per tensor.")


def _cosine(a: torch.Tensor, b: torch.Tensor, dim: int | None) -> torch.Tensor:
    num = (a * b).sum() if dim is None else (a * b).sum(dim=dim, keepdim=True)
    na = a.norm() if dim is None else a.norm(dim=dim, keepdim=True)
    nb = b.norm() if dim is None else b.norm(dim=dim, keepdim=True)
    # Zero deltas have no direction: the clamp makes their cosine 0 (then t = 0 keeps the base).
    return (num / (na * nb).clamp_min(1e-6)).clamp(-1.0, 1.0)


@register("model_stock", global_params=ModelStockParams, min_models=2)
def model_stock(base, models, model_params, params, ctx):
    """t · mean(φ) + (1 − t) · θ with cosθ the mean pairwise cosine of the deltas."""
    deltas = [m - base for m in models]
    k = len(models)
    dim = -1 if params.filter_wise and base.dim() > 1 else None
    cos = torch.stack([_cosine(a, b, dim) for a, b in itertools.combinations(deltas, 2)]).mean(dim=0)
    denom = 1 + (k - 1) * cos
    t = torch.where(denom.abs() < 1e-6, torch.zeros_like(cos), k * cos / denom)
    mean = torch.stack(models).mean(dim=0)
    return t * mean + (1 - t) * base
