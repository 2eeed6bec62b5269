"""SLERP between the base (t = 0) and one other model (t = 1), tensors treated as flat vectors."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from fusion.merge.base import Params, register

# Beyond this |cos| the vectors are (anti)parallel and the sin ω division is unstable: lerp instead.
DOT_THRESHOLD = 0.9995


class SlerpParams(Params):
    """Global parameters of SLERP."""

    t: float = Field(ge=0.0, le=1.0, description="Interpolation position: 0 gives the base, 1 the other model.")


_CHUNK = 1 << 20


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """a·b over the flattened tensors: chunked dot products summed in float64 (no temporaries)."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    return math.fsum(float(torch.dot(fa[i:i + _CHUNK], fb[i:i + _CHUNK])) for i in range(0, fa.numel(), _CHUNK))


def slerp_tensors(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """sin((1−t)ω)/sin ω · a + sin(tω)/sin ω · b with ω the angle between a and b (written into a)."""
    # A (near-)zero vector is left unnormalized (norm taken as 1): its dot is 0, ω = π/2.
    norm_a, norm_b = math.sqrt(_dot(a, a)), math.sqrt(_dot(b, b))
    dot = _dot(a, b) / ((norm_a if norm_a > 1e-8 else 1.0) * (norm_b if norm_b > 1e-8 else 1.0))
    dot = max(-1.0, min(1.0, dot))
    if abs(dot) > DOT_THRESHOLD:
        return a.mul_(1 - t).add_(b, alpha=t)
    omega = math.acos(dot)
    s = math.sin(omega)
    return a.mul_(math.sin((1 - t) * omega) / s).add_(b, alpha=math.sin(t * omega) / s)


@register("slerp", global_params=SlerpParams, min_models=1, max_models=1)
def slerp(base, models, model_params, params, ctx):
    """Spherical interpolation from the base to the one other model."""
    return slerp_tensors(base, models[0], params.t)
