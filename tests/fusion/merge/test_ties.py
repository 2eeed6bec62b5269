import numpy as np

from tests.fusion.merge import npref
from tests.fusion.merge.conftest import call


def test_ties_matches_numpy(triple):
    base, a, b = triple
    mp = [{"weight": 1.0, "density": 0.5}, {"weight": 0.6, "density": 0.3}]
    out, _ = call("ties", base, [a, b], mp)
    np.testing.assert_allclose(out, npref.ties(base, [a, b], [1.0, 0.6], [0.5, 0.3]), rtol=1e-12, atol=1e-15)


def test_ties_keeps_exactly_top_k_and_elects_signs():
    base = np.zeros(6)
    a = np.array([3.0, -1.0, 0.5, 2.0, 0.0, -0.1])
    b = np.array([-1.0, -2.0, 0.4, -3.0, 0.2, 0.0])
    out, _ = call("ties", base, [a, b], [{"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}])
    # top-3 of |a|: 3, 2, -1 -> [3, -1, 0, 2, 0, 0]; of |b|: -3, -2, -1 -> [-1, -2, 0, -3, 0, 0]
    # sums: [2, -3, 0, -1, 0, 0] elect [+, -, +, -, +, +]
    # entry 0: only a agrees -> 3; entry 1: both -> -1.5; entry 3: only b -> -3; entries 2, 4, 5: nobody -> 0
    np.testing.assert_allclose(out, [3.0, -1.5, 0.0, -3.0, 0.0, 0.0])


def test_ties_density_one_single_model_returns_model(triple):
    base, a, _ = triple
    out, _ = call("ties", base, [a], [{"weight": 0.8, "density": 1.0}])
    np.testing.assert_allclose(out, a, rtol=1e-12)


def test_ties_all_zero_deltas_give_base(triple):
    base, _, _ = triple
    out, _ = call("ties", base, [base.copy(), base.copy()], [{"weight": 1.0, "density": 0.5}] * 2)
    np.testing.assert_array_equal(out, base)


def test_ties_unnormalized_and_lambda(triple):
    base, a, b = triple
    mp = [{"weight": 0.5, "density": 0.7}, {"weight": 0.5, "density": 0.7}]
    out, _ = call("ties", base, [a, b], mp, normalize=False, **{"lambda": 0.8})
    ref = npref.ties(base, [a, b], [0.5, 0.5], [0.7, 0.7], lam=0.8, normalize=False)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-15)


def test_ties_exact_cancellation_elects_plus_and_negative_weights():
    base = np.zeros(3)
    a = np.array([1.0, 0.0, -2.0])
    b = np.array([-1.0, 0.0, 2.0])
    out, _ = call("ties", base, [a, b], [{"weight": 1.0, "density": 1.0}, {"weight": 1.0, "density": 1.0}])
    # Σ w δ is exactly 0 everywhere: + is elected, so the positive delta alone survives
    np.testing.assert_allclose(out, [1.0, 0.0, 2.0])
    # a negative weight flips a model's vote; the divisor takes signed weights (mergekit's rule)
    rng = np.random.default_rng(3)
    base, m1, m2 = rng.normal(size=(3, 50))
    mp = [{"weight": 1.0, "density": 0.6}, {"weight": -0.5, "density": 0.6}]
    out, _ = call("ties", base, [m1, m2], mp)
    np.testing.assert_allclose(out, npref.ties(base, [m1, m2], [1.0, -0.5], [0.6, 0.6]), rtol=1e-12, atol=1e-15)
