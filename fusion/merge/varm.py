"""VaRM (FuseChat): per-matrix weights from the variation ratio of each target's delta.

r_im = mean(δ_im²) for target i and matrix m, W_im = r_im / Σ_j r_jm, result Σ_i W_im φ_im.
Implemented as the formula is written, so the weights can be checked against it; all-zero
deltas give equal weights.
"""

from __future__ import annotations

import torch

from fusion.merge.base import register


def varm_weights(base: torch.Tensor, models: list[torch.Tensor]) -> torch.Tensor:
    """W_i = mean(δ_i²) / Σ_j mean(δ_j²), or 1/n when every delta is zero."""
    r = torch.stack([(m - base).double().square_().mean() for m in models])
    total = r.sum()
    if total <= 0:
        return torch.full_like(r, 1.0 / len(models))
    return r / total


@register("varm", min_models=1)
def varm(base, models, model_params, params, ctx):
    """Σ_i W_i φ_i with W from the variation ratio of the deltas against the base."""
    w = varm_weights(base, models)
    ctx.note(weights=w.tolist())
    out = models[0] * float(w[0])
    for m, wi in zip(models[1:], w[1:].tolist()):
        out.add_(m, alpha=wi)
    return out
