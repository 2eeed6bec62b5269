"""Recipes over training seeds: the crossed seeds x questions interval, its coverage, and P(best)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from harness.analysis.stats import cells, clustered_se, estimate, prob_best, seed_estimate


def rows(effect: np.ndarray, seeds: int, questions: int, rng, seed_sd=0.0, question_sd=0.3, noise=0.4, turns=2):
    """Rows of a crossed design: value = effect + a_seed + b_question + noise, `turns` rows per cell."""
    a = rng.normal(0, seed_sd, seeds)
    b = rng.normal(0, question_sd, questions)
    s = np.repeat(np.arange(seeds), questions * turns)
    q = np.tile(np.repeat(np.arange(questions), turns), seeds)
    v = effect + a[s] + b[q] + rng.normal(0, noise, len(s))
    return v, s, q


def anova_variance(d: np.ndarray) -> float:
    """Var(mean) of a two-way random-effects table from an additive least-squares fit (an independent route)."""
    n_s, n_q = d.shape
    x = np.hstack([np.ones((d.size, 1)), np.kron(np.eye(n_s), np.ones((n_q, 1)))[:, 1:],
                   np.kron(np.ones((n_s, 1)), np.eye(n_q))[:, 1:]])
    beta, *_ = np.linalg.lstsq(x, d.reshape(-1), rcond=None)
    ms_e = float(((d.reshape(-1) - x @ beta) ** 2).sum()) / ((n_s - 1) * (n_q - 1))
    ms_s = n_q * np.var(d.mean(1), ddof=1)
    ms_q = n_s * np.var(d.mean(0), ddof=1)
    return max(0.0, (ms_s - ms_e) / n_q) / n_s + ms_q / (n_s * n_q)


def test_cells_keep_questions_every_seed_has():
    d, s, q = cells([1.0, 3.0, 2.0, 5.0, 7.0], seed=[0, 0, 0, 1, 1], question=["a", "a", "b", "a", "c"])
    assert s.tolist() == [0, 1] and q.tolist() == ["a"] and d.tolist() == [[2.0], [5.0]]


def test_interval_matches_an_independent_anova_fit():
    rng = np.random.default_rng(3)
    v, s, q = rows(0.2, 3, 30, rng, seed_sd=0.2)
    e = seed_estimate(v, s, q, level=0.95)
    d, _, _ = cells(v, s, q)
    assert e.mean == pytest.approx(d.mean())
    assert e.se == pytest.approx(np.sqrt(anova_variance(d)), rel=1e-9)
    assert e.high - e.mean == pytest.approx(st.t.ppf(0.975, e.df) * e.se, rel=1e-9)
    assert e.n_seeds == 3 and e.n_clusters == 30 and e.n_rows == len(v)


def test_seeds_that_agree_give_the_question_clustered_interval():
    rng = np.random.default_rng(4)
    v, s, q = rows(0.1, 1, 40, rng)
    twice = seed_estimate(np.concatenate([v, v]), np.r_[s, s + 1], np.r_[q, q], level=0.95)
    per_question = np.bincount(q, weights=v) / np.bincount(q)
    assert twice.seed_sd == 0 and twice.df == 39
    assert twice.se == pytest.approx(clustered_se(per_question, np.arange(40)), rel=1e-9)


def test_one_seed_is_the_cluster_bootstrap():
    rng = np.random.default_rng(5)
    v, s, q = rows(0.1, 1, 25, rng)
    e = seed_estimate(v, s, q, level=0.9, n_boot=2000)
    d, _, _ = cells(v, s, q)
    ref = estimate(d[0], np.arange(25), level=0.9, n_boot=2000)
    assert (e.mean, e.low, e.high, e.n_seeds) == pytest.approx((ref.mean, ref.low, ref.high, 1))


def coverage(seeds: int, questions: int, seed_sd: float, level: float, n: int = 1500, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n):
        v, s, q = rows(0.1, seeds, questions, rng, seed_sd=seed_sd)
        e = seed_estimate(v, s, q, level=level)
        hits += e.low <= 0.1 <= e.high
    return hits / n


@pytest.mark.parametrize(("seeds", "questions", "seed_sd"), [(2, 40, 0.0), (3, 40, 0.05), (5, 100, 0.05)])
def test_coverage_near_nominal_where_seeds_vary_no_more_than_the_question_noise(seeds, questions, seed_sd):
    """Question SE here: ~0.3/√Q + noise; seed SD up to about that: 95% intervals cover 0.93 to 0.985."""
    assert 0.93 <= coverage(seeds, questions, seed_sd, 0.95) <= 0.985


def test_few_seeds_that_vary_a_lot_are_flagged():
    """2 seeds whose SD is 3x the question SE: coverage drops below 0.93, and the estimate says so."""
    assert coverage(2, 100, 0.15, 0.95, n=1000) < 0.93
    rng = np.random.default_rng(8)
    flagged = [seed_estimate(*rows(0.1, 2, 100, rng, seed_sd=0.15)).seed_dominated for _ in range(200)]
    assert np.mean(flagged) > 0.5
    calm = [seed_estimate(*rows(0.1, 2, 100, rng, seed_sd=0.0)).seed_dominated for _ in range(200)]
    assert np.mean(calm) < 0.2


def test_prob_best():
    rng = np.random.default_rng(6)
    a = rows(0.3, 2, 60, rng, seed_sd=0.02)
    b = (a[0] - 0.3, a[1], a[2])
    c = (a[0].copy(), a[1], a[2])
    p = prob_best({"a": a, "b": b, "c": c}, n_boot=1000)
    assert sum(p.values()) == pytest.approx(1.0)
    # a and c are the same data with their own seed draws: about half each
    assert p["b"] == 0 and p["a"] == pytest.approx(0.5, abs=0.06) and p["c"] == pytest.approx(0.5, abs=0.06)
    far = prob_best({"good": a, "bad": b}, n_boot=500)
    assert far["good"] == 1.0
