import numpy as np
import pytest

from tests.fusion.merge import npref
from tests.fusion.merge.conftest import call


@pytest.mark.parametrize("topk", [1.0, 0.5, 0.1])
def test_sce_matches_numpy(rng, topk):
    base = rng.normal(size=(10, 12))
    models = [base + rng.normal(scale=s, size=base.shape) for s in (0.05, 0.1, 0.2)]
    out, ctx = call("sce", base, models, select_topk=topk)
    ref, eta = npref.sce(base, models, select_topk=topk)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ctx.notes["weights"], eta, rtol=1e-10)


def test_sce_without_normalize_is_the_papers_equation(rng):
    base = rng.normal(size=(6, 6))
    models = [base + rng.normal(scale=0.1, size=base.shape) for _ in range(2)]
    out, _ = call("sce", base, models, normalize=False)
    np.testing.assert_allclose(out, npref.sce(base, models, normalize=False)[0], rtol=1e-10)


def test_sce_all_zero_deltas_and_single_model(rng):
    base = rng.normal(size=(4, 5))
    out, ctx = call("sce", base, [base.copy(), base.copy()])
    np.testing.assert_array_equal(out, base)
    assert ctx.notes["weights"] == [0.5, 0.5]
    a = base + rng.normal(scale=0.1, size=base.shape)
    np.testing.assert_allclose(call("sce", base, [a])[0], a, rtol=1e-12)
    # with one model the variance is 0 everywhere, so selection below 1 keeps nothing
    np.testing.assert_array_equal(call("sce", base, [a], select_topk=0.5)[0], base)


def test_varm_weights_are_mean_squared_delta_ratio(rng):
    base = rng.normal(size=(7, 9))
    a = base + rng.normal(scale=0.1, size=base.shape)
    b = base + rng.normal(scale=0.3, size=base.shape)
    out, ctx = call("varm", base, [a, b])
    ra, rb = np.mean((a - base) ** 2), np.mean((b - base) ** 2)
    np.testing.assert_allclose(ctx.notes["weights"], [ra / (ra + rb), rb / (ra + rb)], rtol=1e-12)
    np.testing.assert_allclose(out, npref.varm(base, [a, b])[0], rtol=1e-12)


def test_varm_all_zero_deltas_give_equal_weights(rng):
    base = rng.normal(size=(3, 3))
    out, ctx = call("varm", base, [base.copy(), base.copy(), base.copy()])
    np.testing.assert_allclose(ctx.notes["weights"], [1 / 3] * 3)
    np.testing.assert_allclose(out, base, rtol=1e-12)
