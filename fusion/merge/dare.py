"""DARE: drop delta entries at random with probability 1 − density, rescale the rest, then combine.

`rescale: density` (default) multiplies kept entries by 1/density as in the DARE paper, which keeps
each entry's expectation; `rescale: l1` restores the delta's L1 norm as mergekit 0.1.5 does;
`rescale: none` keeps them as they are. The drop mask comes from a generator seeded per tensor.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from pydantic import Field, field_validator

from fusion.merge.base import register
from fusion.merge.sparsify import random_drop
from fusion.merge.task_arithmetic import TaskArithmeticParams, combine_weighted, deltas_in_place
from fusion.merge.ties import DensityParams


class DareParams(TaskArithmeticParams):
    """Global parameters of DARE."""

    rescale: Literal["density", "l1", "none"] = Field(
        default="density",
        description="Kept entries × 1/p (density), × L1 ratio (l1, mergekit 0.1.5), or as is (none).")

    @field_validator("rescale", mode="before")
    @classmethod
    def _mergekit_bool(cls, v):
        # mergekit's boolean: true means its (0.1.5) L1-ratio rescale.
        return {True: "l1", False: "none"}.get(v, v) if isinstance(v, bool) else v


class DareTiesParams(DareParams):
    """Global parameters of DARE-TIES (normalize on, as TIES)."""

    normalize: bool = Field(default=True, description="Divide by the sum of weights of the agreeing models.")


def _dropped(base, models, model_params, params, ctx):
    """Each model's delta with its own random drop. Every model draws from its own child generator
    (spawned from the tensor's generator, so still a function of seed and tensor name), which lets
    the masks be drawn in parallel threads: numpy and torch release the GIL in these loops."""
    deltas = deltas_in_place(base, models)
    rngs = ctx.rng.spawn(len(deltas))
    jobs = list(zip(deltas, model_params, rngs))
    drop = lambda job: random_drop(job[0], job[1].density, job[2], params.rescale)  # noqa: E731
    if len(jobs) < 2 or base.numel() < (1 << 16):
        return [drop(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        return list(pool.map(drop, jobs))


@register("dare_linear", model_params=DensityParams, global_params=DareParams)
def dare_linear(base, models, model_params, params, ctx):
    """θ + λ Σ w_i DARE(δ_i)."""
    deltas = _dropped(base, models, model_params, params, ctx)
    return combine_weighted(base, deltas, model_params, params, consensus=False)


@register("dare_ties", model_params=DensityParams, global_params=DareTiesParams)
def dare_ties(base, models, model_params, params, ctx):
    """TIES sign election over DARE-sparsified deltas."""
    deltas = _dropped(base, models, model_params, params, ctx)
    return combine_weighted(base, deltas, model_params, params, consensus=True)
