from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.merge.base import TensorContext
from fusion.merge.registry import get_method


def call(method: str, base, models, model_params=None, seed: int = 0, **global_params):
    """Run a registered method on numpy arrays; returns (numpy result, ctx)."""
    m = get_method(method)
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    mps = [m.model_params(**p) for p in (model_params or [{} for _ in models])]
    ctx = TensorContext("x", np.random.default_rng(seed))
    out = m.fn(None if base is None else t(base), [t(x) for x in models], mps, m.global_params(**global_params), ctx)
    return out.numpy(), ctx


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def triple(rng):
    """A base and two models with different, partly sign-conflicting deltas (6 x 8)."""
    base = rng.normal(size=(6, 8))
    return base, base + rng.normal(scale=0.1, size=(6, 8)), base + rng.normal(scale=0.2, size=(6, 8))
