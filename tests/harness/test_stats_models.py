"""Bradley–Terry, minimum detectable effect and variance components against scipy, formulas and simulations."""

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps
from scipy.special import log_expit

from harness.analysis.stats import (
    Estimate,
    bradley_terry,
    mde,
    mean_interval,
    questions_for,
    questions_to_decide,
    variance_components,
)

MODELS = np.array(["m0", "m1", "m2", "m3", "m4"])
TRUE = np.array([1.0, 0.5, 0.0, -0.3, -1.2])  # log-strengths, mean 0


def _simulate_bt(rng, n, strengths=TRUE, tie_share=0.0):
    """Comparisons of random distinct pairs; A wins with the Bradley–Terry probability (ties at random)."""
    m = len(strengths)
    ia = rng.integers(0, m, n)
    ib = (ia + rng.integers(1, m, n)) % m
    p = 1 / (1 + np.exp(strengths[ib] - strengths[ia]))
    y = (rng.random(n) < p).astype(float)
    y[rng.random(n) < tie_share] = 0.5
    return MODELS[ia], MODELS[ib], y


def _scipy_bt(a, b, y, prior):
    """Reference: maximise the log-likelihood (plus `prior` virtual ties per pair) with BFGS, θ centred."""
    names = sorted(set(a) | set(b))
    pos = {name: i for i, name in enumerate(names)}
    ia = np.array([pos[x] for x in a])
    ib = np.array([pos[x] for x in b])
    m = len(names)
    ii, jj = np.triu_indices(m, 1)

    def negll(free):
        th = np.append(free, -free.sum())  # centred: the last strength is minus the sum of the others
        d = th[ia] - th[ib]
        ll = np.sum(y * log_expit(d) + (1 - y) * log_expit(-d))
        ll += prior / 2 * np.sum(log_expit(th[ii] - th[jj]) + log_expit(th[jj] - th[ii]))
        g = np.zeros(m)  # d/dθ_a [y log σ(d) + (1−y) log σ(−d)] = y − σ(d)
        np.add.at(g, ia, y - 1 / (1 + np.exp(-d)))
        np.add.at(g, ib, -(y - 1 / (1 + np.exp(-d))))
        dp = th[ii] - th[jj]  # a virtual tie: y = 1/2
        np.add.at(g, ii, prior * (0.5 - 1 / (1 + np.exp(-dp))))
        np.add.at(g, jj, -prior * (0.5 - 1 / (1 + np.exp(-dp))))
        return -ll, -(g[:-1] - g[-1])

    res = optimize.minimize(negll, np.zeros(m - 1), jac=True, method="BFGS", options={"gtol": 1e-10})
    return dict(zip(names, np.append(res.x, -res.x.sum())))


@pytest.mark.parametrize("prior", [1.0, 1e-6])
def test_bradley_terry_point_estimates_match_scipy_maximum_likelihood(prior):
    a, b, y = _simulate_bt(np.random.default_rng(0), 800, tie_share=0.1)
    table = bradley_terry(a, b, y, prior=prior, n_boot=50)
    ref = _scipy_bt(a, b, y, prior)
    for name, row in table.iterrows():
        assert row["strength"] == pytest.approx(ref[name], abs=1e-4)
    assert table["strength"].mean() == pytest.approx(0, abs=1e-12)
    assert list(table.columns) == ["strength", "low", "high", "games"]
    assert table["strength"].is_monotonic_decreasing
    assert table.loc["m0", "games"] == np.sum(a == "m0") + np.sum(b == "m0")


def test_bradley_terry_anchor_fixes_one_model_at_zero_and_keeps_differences():
    a, b, y = _simulate_bt(np.random.default_rng(1), 600)
    centred = bradley_terry(a, b, y, n_boot=200, seed=3)
    anchored = bradley_terry(a, b, y, n_boot=200, seed=3, anchor="m2")
    assert tuple(anchored.loc["m2", ["strength", "low", "high"]]) == (0.0, 0.0, 0.0)
    shift = centred.loc["m2", "strength"]
    for name in MODELS:
        assert anchored.loc[name, "strength"] == pytest.approx(centred.loc[name, "strength"] - shift, abs=1e-9)
    with pytest.raises(ValueError, match="anchor 'nope'"):
        bradley_terry(a, b, y, anchor="nope", n_boot=10)


def test_bradley_terry_intervals_contain_the_true_strengths_in_most_simulations():
    rng = np.random.default_rng(2)
    inside = total = 0
    for i in range(20):
        a, b, y = _simulate_bt(rng, 600)
        table = bradley_terry(a, b, y, clusters=np.arange(600) // 3, n_boot=300, seed=i)
        truth = TRUE[[int(name[1]) for name in table.index]]
        inside += int(np.sum((table["low"] <= truth) & (truth <= table["high"])))
        total += len(truth)
    assert inside / total >= 0.85  # 95% intervals; 100 intervals


def test_bradley_terry_gives_a_model_that_never_lost_a_finite_top_strength():
    rng = np.random.default_rng(3)
    a, b, y = _simulate_bt(rng, 400)
    y = np.where(a == "m4", 1.0, np.where(b == "m4", 0.0, y))  # the weakest model now wins every game
    verdicts = np.where(y == 1, "A", "B")
    table = bradley_terry(a, b, verdicts, n_boot=100)
    assert table.index[0] == "m4" and np.isfinite(table.to_numpy(float)).all()
    assert table.loc["m4", "strength"] == pytest.approx(_scipy_bt(a, b, y, 1.0)["m4"], abs=1e-4)
    with pytest.raises(ValueError, match="prior must be > 0"):
        bradley_terry(a, b, y, prior=0)


def test_bradley_terry_ties_and_clusters():
    a = np.array(["x", "y", "z"] * 20)
    b = np.array(["y", "z", "x"] * 20)
    table = bradley_terry(a, b, ["tie"] * 60, n_boot=50)
    np.testing.assert_allclose(table[["strength", "low", "high"]].to_numpy(), 0, atol=1e-9)
    a, b, y = _simulate_bt(np.random.default_rng(4), 300, tie_share=0.2)
    none = bradley_terry(a, b, y, n_boot=100, seed=1)
    own = bradley_terry(a, b, y, clusters=np.arange(300), n_boot=100, seed=1)
    assert none.equals(own)  # clusters=None: every comparison is its own cluster


def test_bradley_terry_refuses_bad_input():
    with pytest.raises(ValueError, match="compared with itself"):
        bradley_terry(["x", "y"], ["x", "x"], [1, 0])
    with pytest.raises(ValueError, match="align"):
        bradley_terry(["x", "y"], ["y"], [1, 0])
    with pytest.raises(ValueError, match="not one of"):
        bradley_terry(["x"], ["y"], [2])
    with pytest.raises(ValueError, match="cluster ids"):
        bradley_terry(["x", "y"], ["y", "x"], [1, 0], clusters=[0])


# --- minimum detectable effect ----------------------------------------------------------------

def test_mde_matches_the_normal_formula_on_per_question_means():
    rng = np.random.default_rng(5)
    clusters = np.repeat(np.arange(60), rng.integers(1, 4, 60))
    d = rng.normal(0.1, 1, 60)[clusters] + rng.normal(0, 0.5, len(clusters))
    per_q = [np.mean(d[clusters == q]) for q in range(60)]
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert mde(d, clusters) == pytest.approx(z * np.std(per_q, ddof=1) / np.sqrt(60), rel=1e-10)
    z90 = sps.norm.ppf(0.95) + sps.norm.ppf(0.9)
    assert mde(d, clusters, power=0.9, level=0.9) == pytest.approx(z90 * np.std(per_q, ddof=1) / np.sqrt(60))
    with pytest.raises(ValueError, match="2 questions"):
        mde([0.1, 0.2], [0, 0])


def test_questions_for_inverts_the_mde():
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert questions_for(0.5, 2.0) == int(np.ceil((z * 2.0 / 0.5) ** 2))  # 126
    effect = z * 1.3 / np.sqrt(80)
    assert questions_for(effect, 1.3) == 80
    assert questions_for(effect * 2, 1.3) == 20
    with pytest.raises(ValueError, match="effect"):
        questions_for(0.0, 1.0)
    with pytest.raises(ValueError, match="power"):
        questions_for(0.3, 1.0, power=1.0)


def test_questions_to_decide_scales_the_half_width():
    e = Estimate(mean=0.10, low=-0.20, high=0.40, se=0.15, level=0.9, n_rows=160, n_clusters=80)
    assert questions_to_decide(e, 0.25) == 320  # the half-width must fall from 0.30 to 0.15: 4x questions
    assert questions_to_decide(Estimate(0.25, 0.0, 0.5, 0.1, 0.9, 2, 2), 0.25) is None  # on the margin


@pytest.mark.slow
def test_an_effect_equal_to_the_mde_is_detected_about_80_percent_of_the_time():
    rng = np.random.default_rng(6)
    c, sims = 80, 500
    clusters = np.repeat(np.arange(c), 2)
    sd_q = np.sqrt(0.8**2 + 0.6**2 / 2)  # sd of a question's mean difference over its 2 turns
    effect = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * sd_q / np.sqrt(c)
    detected, mdes = 0, []
    for i in range(sims):
        d = effect + rng.normal(0, 0.8, c)[clusters] + rng.normal(0, 0.6, 2 * c)
        _, lo, hi = mean_interval(d, clusters, n_boot=1000, seed=i)
        detected += lo > 0 or hi < 0
        mdes.append(mde(d, clusters))
    assert 0.7 <= detected / sims <= 0.9
    assert np.mean(mdes) == pytest.approx(effect, rel=0.05)


# --- variance components ----------------------------------------------------------------------

def _simulate_nested(rng, c, k, j, omega2=1.0, gen2=0.5, judge2=0.25):
    """Balanced rows: question effect + answer (sample) effect + judge noise, with their ids."""
    q = np.repeat(np.arange(c), k * j)
    s = np.tile(np.repeat(np.arange(k), j), c)
    r = np.tile(np.arange(j), c * k)
    values = (5 + rng.normal(0, np.sqrt(omega2), c)[q] + rng.normal(0, np.sqrt(gen2), c * k)[q * k + s]
              + rng.normal(0, np.sqrt(judge2), c * k * j))
    return values, q, s, r


def _loop_nested_anova(values, q, s, c, k, j):
    """Reference: balanced nested ANOVA mean squares with plain loops, then method of moments."""
    cells = {}
    for v, qq, ss in zip(values, q, s):
        cells.setdefault((qq, ss), []).append(v)
    cell_mean = {key: sum(x) / len(x) for key, x in cells.items()}
    q_mean = {qq: sum(cell_mean[(qq, ss)] for ss in range(k)) / k for qq in range(c)}
    grand = sum(q_mean.values()) / c
    ms_r = sum((v - cell_mean[key]) ** 2 for key, x in cells.items() for v in x) / (c * k * (j - 1))
    ms_s = j * sum((cell_mean[(qq, ss)] - q_mean[qq]) ** 2 for qq in range(c) for ss in range(k)) / (c * (k - 1))
    ms_q = k * j * sum((m - grand) ** 2 for m in q_mean.values()) / (c - 1)
    return (ms_q - ms_s) / (k * j), (ms_s - ms_r) / j, ms_r


def test_variance_components_recover_known_parts_on_balanced_data():
    values, q, s, r = _simulate_nested(np.random.default_rng(7), 300, 4, 3)
    vc = variance_components(values, q, s, r)
    assert (vc.K, vc.J, vc.C, vc.balanced) == (4, 3, 300, True)
    assert vc.omega2 == pytest.approx(1.0, rel=0.2)
    assert vc.sigma2_gen == pytest.approx(0.5, rel=0.2)
    assert vc.sigma2_judge == pytest.approx(0.25, rel=0.1)
    ref = _loop_nested_anova(values.tolist(), q.tolist(), s.tolist(), 300, 4, 3)
    assert (vc.omega2, vc.sigma2_gen, vc.sigma2_judge) == pytest.approx(ref, rel=1e-9)
    assert vc.var_mean == pytest.approx((vc.omega2 + vc.sigma2_gen / 4 + vc.sigma2_judge / 12) / 300)
    assert vc.var_mean_at(questions=600) == pytest.approx(vc.var_mean / 2)
    assert vc.var_mean_at(repeats=1) > vc.var_mean


def test_var_mean_predicts_the_spread_of_the_mean_over_simulated_suites():
    rng = np.random.default_rng(8)
    means, predicted = [], []
    for _ in range(400):
        values, q, s, r = _simulate_nested(rng, 40, 3, 2)
        means.append(values.mean())
        predicted.append(variance_components(values, q, s, r).var_mean)
    truth = (1.0 + 0.5 / 3 + 0.25 / 6) / 40
    assert np.var(means, ddof=1) == pytest.approx(truth, rel=0.2)
    assert np.mean(predicted) == pytest.approx(np.var(means, ddof=1), rel=0.2)


def test_variance_components_levels_without_members_and_unbalanced_data():
    rng = np.random.default_rng(9)
    values, q, s, r = _simulate_nested(rng, 200, 3, 2)
    no_repeat = variance_components(values, q, sample=q * 10 + s * 2 + r)  # every row its own answer
    assert (no_repeat.K, no_repeat.J, no_repeat.sigma2_judge) == (6, 1, 0.0)
    assert no_repeat.sigma2_gen == pytest.approx(0.5 + 0.25, rel=0.2)  # judge noise lands in generation
    rows_only = variance_components(values, q)
    assert (rows_only.omega2, rows_only.sigma2_gen) == pytest.approx((no_repeat.omega2, no_repeat.sigma2_gen))
    repeats_only = variance_components(values, q, repeat=s * 2 + r)  # one answer judged 6 times
    assert (repeats_only.K, repeats_only.J, repeats_only.sigma2_gen) == (1, 6, 0.0)

    keep = rng.random(len(values)) < 0.8  # drop a fifth of the rows at random: unbalanced
    vc = variance_components(values[keep], q[keep], s[keep], r[keep])
    assert not vc.balanced and 1 < vc.J < 2 and 2 < vc.K <= 3
    assert (vc.omega2, vc.sigma2_gen, vc.sigma2_judge) == pytest.approx((1.0, 0.5, 0.25), rel=0.35)

    with pytest.raises(ValueError, match="share a question, sample and judge repeat"):
        variance_components(values, q, s)  # two repeats per answer but no repeat ids
    with pytest.raises(ValueError, match="2 questions"):
        variance_components([1.0, 2.0], [0, 0])
