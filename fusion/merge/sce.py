"""SCE: select high-variance entries, calculate per-model weights, erase sign conflicts, average.

(1) select: keep entries whose variance across the n deltas is in the top `select_topk` fraction;
(2) calculate: η_i = Σ δ̂_i² / Σ_j Σ δ̂_j²; (3) erase: m_i keeps entries whose sign matches
sign(Σ_j δ̂_j); result θ + Σ_i η_i m_i δ̂_i / Σ_i η_i m_i per entry (as mergekit and the authors'
code compute; `normalize: false` gives the paper's equation without the division).
"""

from __future__ import annotations

import torch
from pydantic import Field

from fusion.merge.base import Params, register
from fusion.merge.sparsify import top_k_mask
from fusion.merge.task_arithmetic import elect_sign_mask


class SceParams(Params):
    """Global parameters of SCE."""

    select_topk: float = Field(default=1.0, ge=0.0, le=1.0, description="Fraction of entries kept by variance.")
    normalize: bool = Field(default=True, description="Divide per entry by the sum of surviving weights.")
    int8_mask: bool = Field(default=False, description="Accepted for mergekit compatibility.")


def sce_select(deltas: torch.Tensor, select_topk: float) -> torch.Tensor:
    """Mask of the entries with the top `select_topk` fraction of variance across models."""
    if select_topk >= 1.0:
        return torch.ones(deltas.shape[1:], dtype=torch.bool, device=deltas.device)
    var = deltas.var(dim=0, unbiased=False)
    # mergekit counts the fraction among entries with nonzero variance.
    k = int(int(torch.count_nonzero(var)) * select_topk)
    flat = var.detach().reshape(-1).to(device="cpu", dtype=torch.float32).numpy()
    return torch.from_numpy(top_k_mask(flat, k)).reshape(var.shape).to(var.device)


def sce_weights(deltas: torch.Tensor) -> torch.Tensor:
    """η_i = mean(δ̂_i²) / Σ_j mean(δ̂_j²); equal weights when that sum is (near) zero."""
    r = (deltas.double() ** 2).reshape(deltas.shape[0], -1).mean(dim=1)
    total = float(r.sum())
    # mergekit's threshold on the sum of mean squares; kept so outputs match it.
    if abs(total) < 1e-6:
        return torch.full_like(r, 1.0 / deltas.shape[0])
    return r / total


@register("sce", global_params=SceParams, min_models=1)
def sce(base, models, model_params, params, ctx):
    """θ + Σ_i η_i m_i δ̂_i / Σ_i η_i m_i."""
    d = torch.stack([m - base for m in models])
    d = d * sce_select(d, params.select_topk)
    eta = sce_weights(d).to(d.dtype)
    ctx.note(weights=eta.tolist())
    w = eta.view(-1, *([1] * base.dim())) * elect_sign_mask(d)
    merged = (d * w).sum(dim=0)
    if params.normalize:
        divisor = w.sum(dim=0)
        merged = merged / divisor.clamp_min(1e-6)  # all-erased entries: 0 / 1e-6 = 0, the base stays
    return base + merged
