import numpy as np
import pytest
import torch

from fusion.merge.sparsify import rank_sampling_probs
from tests.fusion.merge import npref
from tests.fusion.merge.conftest import call


def test_breadcrumbs_window_matches_numpy(triple):
    base, a, b = triple
    mp = [{"weight": 1.0, "density": 0.5, "gamma": 0.1}, {"weight": 0.5, "density": 0.4, "gamma": 0.05}]
    out, _ = call("breadcrumbs", base, [a, b], mp)
    deltas = [npref.breadcrumbs_delta(a - base, 0.5, 0.1), npref.breadcrumbs_delta(b - base, 0.4, 0.05)]
    np.testing.assert_allclose(out, npref.gta(base, deltas, [1.0, 0.5], consensus=False, normalize=False), rtol=1e-12)
    out, _ = call("breadcrumbs_ties", base, [a, b], mp)
    np.testing.assert_allclose(out, npref.gta(base, deltas, [1.0, 0.5], consensus=True, normalize=False), rtol=1e-12)


def test_breadcrumbs_drops_largest_and_smallest():
    base = np.zeros(10)
    a = np.arange(1.0, 11.0)  # magnitudes 1..10
    out, _ = call("breadcrumbs", base, [a], [{"weight": 1.0, "density": 0.5, "gamma": 0.2}])
    # drop the 2 largest (9, 10) and the 3 smallest (1, 2, 3): keep 4..8
    np.testing.assert_array_equal(out, [0, 0, 0, 4, 5, 6, 7, 8, 0, 0])


def test_della_probabilities_follow_rank_per_row(rng):
    delta = rng.normal(size=(5, 9))
    p = rank_sampling_probs(torch.tensor(delta), 0.5, 0.2).numpy()
    np.testing.assert_allclose(p, npref.della_probs(delta, 0.5, 0.2), rtol=1e-6)
    assert np.allclose(p.min(axis=1), 0.3) and np.allclose(p.max(axis=1), 0.7)


def test_della_keeps_by_probability_and_rescales_by_inverse_p(rng):
    base = np.zeros((200, 50))
    a = rng.normal(size=base.shape)
    out, _ = call("della_linear", base, [a], [{"weight": 1.0, "density": 0.5, "epsilon": 0.2}], seed=2)
    kept = out != 0
    p = npref.della_probs(a, 0.5, 0.2)
    np.testing.assert_allclose(out[kept], a[kept] / p[kept], rtol=1e-6)
    # larger magnitudes are kept more often: top rank band near 0.7, bottom near 0.3
    assert kept[p > 0.65].mean() > 0.6 and kept[p < 0.35].mean() < 0.4


def test_della_window_outside_unit_interval_is_rejected():
    from pydantic import ValidationError

    from fusion.merge.registry import get_method

    with pytest.raises(ValidationError, match="density"):
        get_method("della").model_params(weight=1.0, density=0.9, epsilon=0.2)
