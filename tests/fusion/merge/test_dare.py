import numpy as np
import pytest

from tests.fusion.merge import npref
from tests.fusion.merge.conftest import call


@pytest.fixture
def big(rng):
    base = rng.normal(size=(64, 64))
    return base, base + rng.normal(scale=0.1, size=base.shape), base + rng.normal(scale=0.1, size=base.shape)


def test_dare_linear_drops_at_rate_and_rescales_by_density(big):
    base, a, _ = big
    out, _ = call("dare_linear", base, [a], [{"weight": 1.0, "density": 0.3}], seed=7)
    d, delta = out - base, a - base
    kept = d != 0
    # Kept fraction: binomial(4096, 0.3) stays within 5 standard deviations.
    assert abs(kept.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / kept.size)
    np.testing.assert_allclose(d[kept], delta[kept] / 0.3, rtol=1e-12)


def test_dare_l1_rescale_restores_l1_norm(big):
    base, a, _ = big
    out, _ = call("dare_linear", base, [a], [{"weight": 1.0, "density": 0.4}], seed=3, rescale="l1")
    d, delta = out - base, a - base
    np.testing.assert_allclose(np.abs(d).sum(), np.abs(delta).sum(), rtol=1e-10)
    out_mk, _ = call("dare_linear", base, [a], [{"weight": 1.0, "density": 0.4}], seed=3, rescale=True)
    np.testing.assert_array_equal(out, out_mk)  # mergekit's boolean `rescale: true` means the L1 ratio


def test_dare_is_deterministic_given_seed(big):
    base, a, b = big
    mp = [{"weight": 1.0, "density": 0.5}] * 2
    x, _ = call("dare_ties", base, [a, b], mp, seed=11)
    y, _ = call("dare_ties", base, [a, b], mp, seed=11)
    z, _ = call("dare_ties", base, [a, b], mp, seed=12)
    np.testing.assert_array_equal(x, y)
    assert not np.array_equal(x, z)


def test_dare_ties_is_ties_election_over_dropped_deltas(big):
    base, a, b = big
    mp = [{"weight": 1.0, "density": 0.5}, {"weight": 0.5, "density": 0.5}]
    out, _ = call("dare_ties", base, [a, b], mp, seed=5)
    # Recover each model's drop mask from dare_linear with the same generator stream, then
    # recompute TIES' election on the rescaled deltas independently.
    only_a = [{"weight": 1.0, "density": 0.5}, {"weight": 0.0, "density": 0.5}]
    only_b = [{"weight": 0.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}]
    single_a, _ = call("dare_linear", base, [a, b], only_a, seed=5, normalize=False)
    single_b, _ = call("dare_linear", base, [a, b], only_b, seed=5, normalize=False)
    da, db = single_a - base, single_b - base
    ref = npref.gta(base, [da, db], [1.0, 0.5], consensus=True, normalize=True)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_dare_density_one_is_task_arithmetic(big):
    base, a, b = big
    mp = [{"weight": 0.5, "density": 1.0}, {"weight": 0.5, "density": 1.0}]
    out, _ = call("dare_linear", base, [a, b], mp)
    np.testing.assert_allclose(out, npref.task_arithmetic(base, [a, b], [0.5, 0.5]), rtol=1e-12)
