"""Cluster-bootstrap intervals, clustered SE, win rate, missing rows and the gate, against independent references."""

import numpy as np
import pytest
from scipy import stats as sps

from harness.analysis.stats import (
    Estimate,
    Outcome,
    clustered_se,
    drop_missing,
    estimate,
    gate,
    gate_difference,
    mean_interval,
    paired_difference,
    paired_estimate,
    win_rate,
)


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


def expanded_tail_by_hand(level: float, g: int) -> float:
    """Hesterberg's expanded percentile: Φ(√(g/(g−1)) · t_{(1−level)/2, g−1}), from scipy's distributions."""
    return sps.norm.cdf(np.sqrt(g / (g - 1)) * sps.t.ppf((1 - level) / 2, g - 1))


def test_interval_matches_a_plain_loop_within_monte_carlo_error():
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(40), rng.integers(1, 4, 40))
    effect = rng.normal(0, 1, 40)[clusters]
    values = effect + rng.normal(0, 0.5, len(clusters))
    mean, lo, hi = mean_interval(values, clusters, n_boot=4000, seed=3)
    ref = _loop_bootstrap(values.tolist(), clusters.tolist(), 4000, seed=7)
    a = expanded_tail_by_hand(0.95, 40)
    assert mean == pytest.approx(values.mean())
    assert lo == pytest.approx(np.quantile(ref, a), abs=0.04)
    assert hi == pytest.approx(np.quantile(ref, 1 - a), abs=0.04)


def test_few_questions_widen_the_interval_as_the_expanded_percentile_says():
    """10 questions: the percentiles are read at Φ(√(10/9)·t₉(0.025)) ≈ 0.0086, not 0.025 (wider)."""
    rng = np.random.default_rng(11)
    clusters = np.repeat(np.arange(10), 2)
    values = rng.normal(0, 1, 10)[clusters] + rng.normal(0, 0.5, 20)
    mean, lo, hi = mean_interval(values, clusters, n_boot=20_000, seed=4)
    ref = _loop_bootstrap(values.tolist(), clusters.tolist(), 20_000, seed=5)
    a = expanded_tail_by_hand(0.95, 10)
    assert a == pytest.approx(0.0086, abs=0.0002)
    assert lo == pytest.approx(np.quantile(ref, a), abs=0.03) and hi == pytest.approx(np.quantile(ref, 1 - a), abs=0.03)
    assert hi - lo > 1.1 * (np.quantile(ref, 0.975) - np.quantile(ref, 0.025))


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


# --- clustered standard error, Estimate -------------------------------------------------------

def _loop_clustered_se(values, clusters):
    """Reference: the clustered SE formula written out with plain Python sums."""
    n = len(values)
    mean = sum(values) / n
    resid = {}
    for v, c in zip(values, clusters):
        resid[c] = resid.get(c, 0.0) + (v - mean)
    g = len(resid)
    return (g / (g - 1) * sum(r * r for r in resid.values()) / n**2) ** 0.5


def test_clustered_se_matches_the_formula_worked_by_hand():
    values = [1.0, 3.0, 2.0, 6.0, 8.0]
    clusters = ["q1", "q1", "q2", "q3", "q3"]
    # mean 4; residual sums: q1 −4, q2 −2, q3 +6 → Σ² = 56; SE = sqrt(3/2 · 56 / 25)
    assert clustered_se(values, clusters) == pytest.approx((1.5 * 56 / 25) ** 0.5, rel=1e-12)
    rng = np.random.default_rng(4)
    cl = rng.integers(0, 15, 60)
    v = rng.normal(size=60)
    assert clustered_se(v, cl) == pytest.approx(_loop_clustered_se(v.tolist(), cl.tolist()), rel=1e-12)
    assert np.isnan(clustered_se([1.0, 2.0], [7, 7]))  # one question: no between-question spread


def test_clustered_se_agrees_with_the_bootstrap_spread_of_means():
    rng = np.random.default_rng(5)
    clusters = np.repeat(np.arange(300), rng.integers(1, 5, 300))
    values = rng.normal(0, 1, 300)[clusters] + rng.normal(0, 1, len(clusters))
    # bootstrap SD from an independent loop over resampled question ids (rows of repeated ids repeat)
    rows = [np.flatnonzero(clusters == q) for q in range(300)]
    means = np.array([values[np.concatenate([rows[i] for i in rng.integers(0, 300, 300)])].mean()
                      for _ in range(2000)])
    assert clustered_se(values, clusters) == pytest.approx(means.std(ddof=1), rel=0.1)


def test_interval_matches_scipy_bootstrap_with_one_row_per_question():
    rng = np.random.default_rng(6)
    x = rng.gamma(2.0, 1.0, 120)  # skewed, so the percentile interval is not symmetric
    mean, lo, hi = mean_interval(x, np.arange(120), n_boot=20_000, seed=1)
    level = 1 - 2 * expanded_tail_by_hand(0.95, 120)  # scipy's percentile interval at the expanded level
    ref = sps.bootstrap((x,), np.mean, n_resamples=20_000, method="percentile", confidence_level=level,
                        random_state=np.random.default_rng(2)).confidence_interval
    se = x.std() / np.sqrt(120)
    assert lo == pytest.approx(ref.low, abs=0.05 * se)  # Monte-Carlo error of a 2.5% quantile
    assert hi == pytest.approx(ref.high, abs=0.05 * se)


def test_estimate_bundles_interval_se_and_counts():
    rng = np.random.default_rng(7)
    clusters = np.repeat(np.arange(30), 2)
    values = rng.normal(size=60)
    e = estimate(values, clusters, level=0.9, n_boot=2000, seed=3)
    assert (e.mean, e.low, e.high) == mean_interval(values, clusters, level=0.9, n_boot=2000, seed=3)
    assert e.se == pytest.approx(_loop_clustered_se(values.tolist(), clusters.tolist()))
    assert (e.level, e.n_rows, e.n_clusters) == (0.9, 60, 30)
    assert e.half_width == pytest.approx((e.high - e.low) / 2)
    assert e.half_width == pytest.approx(sps.norm.ppf(0.95) * e.se, rel=0.2)  # the cross-check
    base = rng.normal(size=60)
    p = paired_estimate(values, base, clusters, n_boot=2000, seed=3)
    assert (p.mean, p.low, p.high) == paired_difference(values, base, clusters, n_boot=2000, seed=3)
    assert p.se == pytest.approx(_loop_clustered_se((values - base).tolist(), clusters.tolist()))
    with pytest.raises(ValueError, match="rows"):
        paired_estimate([1.0, 2.0], [1.0], [0, 1])


@pytest.mark.slow
def test_cluster_interval_covers_the_truth_at_its_level_and_naive_rows_do_not():
    """MT-Bench-shaped: 80 questions x 2 turns, question effects sd 1, turn noise sd 0.65, mean 6."""
    rng = np.random.default_rng(8)
    sims, c = 600, 80
    clusters = np.repeat(np.arange(c), 2)
    hit_cluster = hit_naive = 0
    for i in range(sims):
        values = 6.0 + rng.normal(0, 1, c)[clusters] + rng.normal(0, 0.65, 2 * c)
        _, lo, hi = mean_interval(values, clusters, n_boot=1000, seed=i)
        hit_cluster += lo <= 6.0 <= hi
        half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
        hit_naive += abs(values.mean() - 6.0) <= half
    assert 0.91 <= hit_cluster / sims <= 0.98
    assert hit_naive / sims < 0.90  # rows treated as independent: ~0.87


# --- missing judgments ------------------------------------------------------------------------

def test_drop_missing_counts_rows_and_drops_a_pair_missing_either_side():
    cand = [7.0, None, 5.0, 6.0, float("nan")]
    base = np.array([6.0, 5.0, np.nan, 6.0, 4.0])
    kept = drop_missing(cand, base, clusters=["a", "a", "b", "c", "c"])
    assert kept.n_missing == 3
    np.testing.assert_array_equal(kept.arrays[0].astype(float), [7.0, 6.0])
    np.testing.assert_array_equal(kept.arrays[1], [6.0, 6.0])
    np.testing.assert_array_equal(kept.clusters, ["a", "c"])
    assert paired_difference(*kept.arrays, kept.clusters)[0] == pytest.approx(0.5)
    assert drop_missing([1, 2], clusters=[0, 1]).n_missing == 0
    with pytest.raises(ValueError, match="lengths"):
        drop_missing([1.0, 2.0], [1.0], clusters=[0, 1])


# --- win rate ---------------------------------------------------------------------------------

def test_win_rate_counts_ties_half_and_matches_a_plain_loop():
    rng = np.random.default_rng(9)
    words = rng.choice(["win", "tie", "loss"], size=150, p=[0.5, 0.2, 0.3])
    clusters = np.repeat(np.arange(75), 2)
    rate, lo, hi = win_rate(words, clusters, n_boot=4000, seed=1)
    points = [1.0 if w == "win" else 0.5 if w == "tie" else 0.0 for w in words]
    assert rate == pytest.approx(((words == "win").sum() + 0.5 * (words == "tie").sum()) / 150)
    ref = _loop_bootstrap(points, clusters.tolist(), 4000, seed=2)
    assert lo == pytest.approx(np.quantile(ref, 0.025), abs=0.01)
    assert hi == pytest.approx(np.quantile(ref, 0.975), abs=0.01)
    assert win_rate(points, clusters, n_boot=4000, seed=1) == (rate, lo, hi)
    assert win_rate(["WIN", "Tie"], [0, 1], n_boot=10)[0] == 0.75


def test_win_rate_refuses_unknown_and_missing_outcomes():
    with pytest.raises(ValueError, match="unknown outcome 'draw'"):
        win_rate(["win", "draw"], [0, 1])
    with pytest.raises(ValueError, match="not one of"):
        win_rate([1.0, 2.0], [0, 1])
    with pytest.raises(ValueError, match="missing"):
        win_rate(["win", None], [0, 1])


# --- gate -------------------------------------------------------------------------------------

@pytest.mark.parametrize("low, high, margin, expected", [
    (0.30, 0.90, 0.25, Outcome.improved),
    (-0.95, -0.27, 0.25, Outcome.regressed),
    (-0.20, 0.20, 0.25, Outcome.equivalent),
    (-0.25, 0.25, 0.25, Outcome.equivalent),    # the edges belong to equivalent
    (0.25, 0.40, 0.25, Outcome.inconclusive),   # low == +m is not above the margin
    (-0.40, -0.25, 0.25, Outcome.inconclusive),
    (-0.10, 0.40, 0.25, Outcome.inconclusive),  # straddles +m
    (-0.50, 0.50, 0.25, Outcome.inconclusive),  # wider than the margin
    (0.01, 0.02, 0.0, Outcome.improved),
    (0.0, 0.0, 0.0, Outcome.equivalent),
    (-0.01, 0.01, 0.0, Outcome.inconclusive),
])
def test_gate_outcomes_and_boundaries(low, high, margin, expected):
    assert gate(low, high, margin) is expected
    assert gate(low, high, margin) == expected.value  # a str Enum: compares to its name


def test_gate_refuses_a_negative_margin_or_a_reversed_interval():
    with pytest.raises(ValueError, match="margin"):
        gate(-0.1, 0.1, -0.25)
    with pytest.raises(ValueError, match="low"):
        gate(0.3, 0.1, 0.25)
    with pytest.raises(ValueError, match="margin"):
        gate_difference([1.0, 2.0], [1.0, 2.0], [0, 1], margin=-1)


def test_gate_difference_uses_the_90_percent_paired_interval():
    rng = np.random.default_rng(10)
    clusters = np.repeat(np.arange(100), 2)
    base = rng.normal(6, 1, 100)[clusters] + rng.normal(0, 0.5, 200)
    outcome, e = gate_difference(base - 0.6, base, clusters, margin=0.25, n_boot=1000)
    assert outcome is Outcome.regressed and isinstance(e, Estimate) and e.level == 0.90
    cand = base + rng.normal(0, 1, 200)
    outcome, e = gate_difference(cand, base, clusters, margin=0.25, n_boot=1000, seed=4)
    assert (e.mean, e.low, e.high) == paired_difference(cand, base, clusters, level=0.90, n_boot=1000, seed=4)
    assert outcome is gate(e.low, e.high, 0.25)
