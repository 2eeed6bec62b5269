"""Cluster-bootstrap intervals against a plain resampling loop and known cases."""

import numpy as np
import pytest

from harness.stats import mean_interval, paired_difference


def _loop_bootstrap(values, clusters, n_boot, seed):
    """Reference: resample question ids with replacement, pool their rows, take the mean."""
    rng = np.random.default_rng(seed)
    ids = sorted(set(clusters))
    rows = {q: [v for v, c in zip(values, clusters) if c == q] for q in ids}
    means = []
    for _ in range(n_boot):
        pick = rng.choice(len(ids), size=len(ids), replace=True)
        pooled = [v for i in pick for v in rows[ids[i]]]
        means.append(np.mean(pooled))
    return np.array(means)


def test_interval_matches_a_plain_loop_within_monte_carlo_error():
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(40), rng.integers(1, 4, 40))
    effect = rng.normal(0, 1, 40)[clusters]
    values = effect + rng.normal(0, 0.5, len(clusters))
    mean, lo, hi = mean_interval(values, clusters, n_boot=4000, seed=3)
    ref = _loop_bootstrap(values.tolist(), clusters.tolist(), 4000, seed=7)
    assert mean == pytest.approx(values.mean())
    assert lo == pytest.approx(np.quantile(ref, 0.025), abs=0.04)
    assert hi == pytest.approx(np.quantile(ref, 0.975), abs=0.04)


def test_clusters_widen_the_interval_compared_with_rows():
    rng = np.random.default_rng(0)
    q = rng.normal(0, 1, 50)
    clusters = np.repeat(np.arange(50), 4)
    values = q[clusters] + rng.normal(0, 0.1, 200)  # 4 near-copies per question
    _, lo_c, hi_c = mean_interval(values, clusters)
    _, lo_r, hi_r = mean_interval(values, np.arange(200))
    assert (hi_c - lo_c) > 1.6 * (hi_r - lo_r)  # ~sqrt(4) wider when rows are not independent


def test_paired_difference_is_the_interval_of_row_differences():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2, 300).astype(float)
    cand = np.where(rng.random(300) < 0.2, 1.0, base)
    clusters = np.arange(300) // 2
    d = paired_difference(cand, base, clusters, n_boot=2000, seed=5)
    m = mean_interval(cand - base, clusters, n_boot=2000, seed=5)
    assert d == m
    assert d[1] > 0  # a one-sided improvement on 300 rows is clearly above zero


def test_constant_scores_give_a_degenerate_interval_and_bad_input_is_refused():
    assert mean_interval([1.0, 1.0, 1.0], [0, 1, 2]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="cluster ids"):
        mean_interval([1.0, 2.0], [0])
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="rows"):
        paired_difference([1.0, 2.0], [1.0], [0, 1])
