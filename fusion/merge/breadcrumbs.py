"""Model Breadcrumbs: drop each delta's largest (`gamma`) and smallest entries, keep `density`, combine."""

from __future__ import annotations

from pydantic import Field

from fusion.merge.base import register
from fusion.merge.sparsify import magnitude_outliers
from fusion.merge.task_arithmetic import TaskArithmeticParams, combine_weighted, deltas_in_place
from fusion.merge.ties import DensityParams


class BreadcrumbsModelParams(DensityParams):
    """Per-model parameters of breadcrumbs."""

    gamma: float = Field(default=0.01, ge=0.0, le=1.0,
                         description="Fraction of the largest |δ| entries dropped as outliers.")


def _crumbs(base, models, model_params):
    return [magnitude_outliers(d, p.density, p.gamma) for d, p in zip(deltas_in_place(base, models), model_params)]


@register("breadcrumbs", model_params=BreadcrumbsModelParams, global_params=TaskArithmeticParams)
def breadcrumbs(base, models, model_params, params, ctx):
    """θ + λ Σ w_i crumbs(δ_i)."""
    return combine_weighted(base, _crumbs(base, models, model_params), model_params, params, consensus=False)


@register("breadcrumbs_ties", model_params=BreadcrumbsModelParams, global_params=TaskArithmeticParams)
def breadcrumbs_ties(base, models, model_params, params, ctx):
    """Breadcrumbs with TIES sign election."""
    return combine_weighted(base, _crumbs(base, models, model_params), model_params, params, consensus=True)
