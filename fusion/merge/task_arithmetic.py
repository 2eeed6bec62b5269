"""Task arithmetic, θ + λ Σ w_i δ_i, and the shared delta combination used by TIES, DARE, breadcrumbs, DELLA."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from fusion.merge.base import Params, register


class WeightParams(Params):
    """Per-model parameters of the task-vector methods."""

    weight: float = Field(description="w_i, the weight of this model (required, as in mergekit).")


class TaskArithmeticParams(Params):
    """Global parameters of task arithmetic."""

    model_config = Params.model_config | {"populate_by_name": True}
    lambda_: float = Field(default=1.0, alias="lambda", description="λ, scale of the merged delta.")
    normalize: bool = Field(default=False, description="Divide the weighted sum by Σ w_i.")
    int8_mask: bool = Field(default=False,
                            description="Accepted for mergekit compatibility; masks are boolean here anyway.")


def elect_sign_mask(weighted: torch.Tensor) -> torch.Tensor:
    """TIES sign election over stacked weighted deltas [n, ...]: mask of entries agreeing with sign(Σ)."""
    elected = torch.where(weighted.sum(dim=0) >= 0, 1.0, -1.0).to(weighted.dtype)
    return torch.sign(weighted) == elected


def deltas_in_place(base: torch.Tensor, models: list[torch.Tensor]) -> list[torch.Tensor]:
    """δ_i = φ_i − θ, computed in the models' own memory."""
    return [m.sub_(base) for m in models]


def combine_deltas(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float], *, consensus: bool,
                   normalize: bool, lam: float) -> torch.Tensor:
    """θ + λ · Σ w_i δ_i [· agreement mask] [/ Σ of the weights that contributed].

    Accumulates in place, one delta at a time: no [n, *shape] stack is materialized.
    """
    # Weights take the compute dtype's rounding, as mergekit builds them as a tensor of that dtype.
    weights = [float(torch.tensor(w, dtype=base.dtype)) for w in weights]
    if consensus and _fused_ok(base, deltas):
        return _consensus_fused(base, deltas, weights, normalize=normalize, lam=lam)
    if not consensus:
        # Each product rounded on its own, then summed in order, as mergekit's (w * δ).sum(0): a
        # fused multiply-add (add_ with alpha) rounds once, and only in torch's vectorized loops, so
        # results would depend on where a tensor's (or a thread's) range ends. In place: the deltas
        # are ours.
        mixed = deltas[0].mul_(weights[0])
        for w, d in zip(weights[1:], deltas[1:]):
            mixed.add_(d.mul_(w))
        if normalize:
            total = sum(weights)
            if abs(total) >= 1e-8:  # mergekit's guard: a vanishing weight sum leaves the sum as is
                mixed.div_(total)
        return mixed.mul_(lam).add_(base)
    mixed = torch.mul(deltas[0], weights[0])
    for w, d in zip(weights[1:], deltas[1:]):
        mixed.add_(d, alpha=w)
    # Elected sign s = ±1 per entry: + where Σ w_i δ_i >= 0. copysign gives -1 only for a sum of
    # -0.0, which arises only when every term is zero, and then no model agrees either way.
    sign = torch.ones_like(base).copysign_(mixed)
    mixed.zero_()
    divisor = torch.zeros_like(base) if normalize else None
    # Only in-place float kernels below (boolean masks are several times slower on CPU):
    # relu(w δ · s) is |w δ| where sign(w δ) = s and 0 elsewhere (an exact zero never agrees);
    # its sign is the agreement indicator, so the divisor gathers the agreeing models' weights.
    for w, d in zip(weights, deltas):
        agreeing = d.mul_(w).mul_(sign).clamp_min_(0.0)  # the deltas are ours to overwrite
        mixed.add_(agreeing)
        if divisor is not None:
            divisor.add_(agreeing.sign_(), alpha=w)
    mixed.mul_(sign)
    del sign
    if divisor is not None:
        # Entries where no model agrees keep the base (mergekit replaces a divisor of exactly 0 by
        # 1; there the numerator is 0 too). With positive weights a nonzero divisor is at least
        # the smallest weight, so a clamp below it does the same without a boolean mask.
        if min(weights) > 0:
            divisor.clamp_min_(0.5 * min(weights))
        else:
            divisor.masked_fill_(divisor == 0, 1.0)
        mixed.div_(divisor)
    return mixed.mul_(lam).add_(base)


def combine_weighted(base: torch.Tensor, deltas: list[torch.Tensor], model_params: list, params, *,
                     consensus: bool) -> torch.Tensor:
    """`combine_deltas` with a method's parameters: each model's `weight`, and the method's `normalize` and λ."""
    return combine_deltas(base, deltas, [p.weight for p in model_params], consensus=consensus,
                          normalize=params.normalize, lam=params.lambda_)


def _fused_ok(base: torch.Tensor, deltas: list[torch.Tensor]) -> bool:
    """The numba kernel serves contiguous CPU float32/float64 tensors of one dtype."""
    return base.device.type == "cpu" and base.dtype in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == base.dtype and t.is_contiguous() for t in [base, *deltas])


def _consensus_fused(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float], *, normalize: bool,
                     lam: float) -> torch.Tensor:
    """The consensus branch of combine_deltas in one pass (fusion/merge/_kernels.py), written into base."""
    from fusion.merge._kernels import ties_consensus

    np_dtype = base.numpy().dtype
    w = np.asarray(weights, dtype=np_dtype)
    min_clamp = 0.5 * min(weights) if min(weights) > 0 else 0.0
    add_base = lam == 1.0  # else λ is applied here, after the kernel (see ties_consensus)
    ties_consensus(base.reshape(-1).numpy(), tuple(d.reshape(-1).numpy() for d in deltas), w, normalize,
                   np_dtype.type(min_clamp), add_base)
    return base if add_base else deltas[0].mul_(lam).add_(base)


@register("task_arithmetic", model_params=WeightParams, global_params=TaskArithmeticParams, elementwise=True)
def task_arithmetic(base, models, model_params, params, ctx):
    """θ + λ Σ w_i (φ_i − θ)."""
    return combine_weighted(base, deltas_in_place(base, models), model_params, params, consensus=False)
