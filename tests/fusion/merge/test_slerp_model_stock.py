import numpy as np
import pytest

from tests.fusion.merge import npref
from tests.fusion.merge.conftest import call


@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 1.0])
def test_slerp_matches_formula(triple, t):
    base, a, _ = triple
    other = a + 0.5  # a clearly different direction from base
    out, _ = call("slerp", base, [other], t=t)
    np.testing.assert_allclose(out, npref.slerp(base, other, t), rtol=1e-10, atol=1e-12)


def test_slerp_endpoints_and_norm(rng):
    a, b = rng.normal(size=100), rng.normal(size=100)
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    np.testing.assert_allclose(call("slerp", a, [b], t=0.0)[0], a, atol=1e-12)
    np.testing.assert_allclose(call("slerp", a, [b], t=1.0)[0], b, atol=1e-12)
    mid, _ = call("slerp", a, [b], t=0.5)
    # on the great circle between equal-norm vectors, the norm is preserved (a lerp would shrink it)
    np.testing.assert_allclose(np.linalg.norm(mid), np.linalg.norm(a), rtol=1e-10)


def test_slerp_parallel_and_antiparallel_fall_back_to_lerp(rng):
    a = rng.normal(size=50)
    for b in (2.0 * a, -a):
        out, _ = call("slerp", a, [b], t=0.3)
        np.testing.assert_allclose(out, 0.7 * a + 0.3 * b, rtol=1e-12)


def test_slerp_zero_vector(rng):
    a = rng.normal(size=20)
    out, _ = call("slerp", np.zeros(20), [a], t=0.5)
    # a zero vector is orthogonal by convention: ω = π/2, coefficient sin(π/4)/1 on a
    np.testing.assert_allclose(out, np.sin(np.pi / 4) * a, rtol=1e-12)


def test_model_stock_matches_formula(rng):
    base = rng.normal(size=(8, 8))
    shared = rng.normal(scale=0.1, size=base.shape)
    models = [base + shared + rng.normal(scale=0.1, size=base.shape) for _ in range(3)]
    out, _ = call("model_stock", base, models)
    ref, t = npref.model_stock(base, models)
    np.testing.assert_allclose(out, ref, rtol=1e-10)
    assert 0 < t < 1


def test_model_stock_zero_deltas_keep_base(rng):
    base = rng.normal(size=(4, 4))
    out, _ = call("model_stock", base, [base.copy(), base.copy()])
    np.testing.assert_array_equal(out, base)


def test_model_stock_filter_wise_per_row(rng):
    base = rng.normal(size=(3, 16))
    models = [base + rng.normal(scale=0.1, size=base.shape) for _ in range(2)]
    out, _ = call("model_stock", base, models, filter_wise=True)
    for r in range(3):
        ref, _ = npref.model_stock(base[r], [m[r] for m in models])
        np.testing.assert_allclose(out[r], ref, rtol=1e-10)
