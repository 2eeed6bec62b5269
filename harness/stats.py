"""Statistics with honest intervals: cluster bootstrap over questions, paired differences, gates.

    mean, lo, hi = mean_interval(scores, clusters)                       # 95% cluster bootstrap
    diff, lo, hi = paired_difference(candidate, baseline, clusters)      # paired on the same rows
    e = estimate(scores, clusters)                                       # + clustered SE and counts
    outcome, e = gate_difference(candidate, baseline, clusters, margin=0.25)
    rate, lo, hi = win_rate(["win", "tie", "loss"], [1, 2, 3])           # ties count half
    table = bradley_terry(model_a, model_b, verdicts, clusters)          # log-strengths with intervals
    vc = variance_components(scores, question, sample, repeat)           # which knob buys precision

Rows are judged units (one per turn or sample); `clusters` gives each row's question id. Questions
are resampled with replacement, keeping every row of a question together, because turns and
samples of one question are not independent. The interval is the percentile interval of the
resampled means (ratio of resampled sums to resampled row counts, so unequal cluster sizes are
weighted by rows, as the point estimate is). Every bootstrap here draws its resamples from
`_weight_blocks`: one seeded multinomial count per question and resample.

Missing judgments are never scored: the functions refuse NaN, and `drop_missing` removes them (a
pair when either side is missing) and counts them for the report. Numbers become sentences only
in harness/wording.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

_BLOCK = 1000  # resamples per block: bounds memory at _BLOCK x n_clusters counts


def _weight_blocks(g: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Cluster-bootstrap resamples as [b, g] float counts of how often each of g clusters is drawn."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _BLOCK):
        b = min(_BLOCK, n_boot - start)
        yield rng.multinomial(g, np.full(g, 1.0 / g), size=b).astype(np.float64)


def _cluster_index(clusters) -> tuple[np.ndarray, int]:
    """Each row's cluster as 0..g-1 (clusters sorted by id), and g."""
    ids, inv = np.unique(np.asarray(clusters).reshape(-1), return_inverse=True)
    return inv.reshape(-1), len(ids)


def _cluster_sums(values: np.ndarray, clusters) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of values and row counts."""
    inv, _ = _cluster_index(clusters)
    return np.bincount(inv, weights=values), np.bincount(inv).astype(np.float64)


def _bootstrap_means(values: np.ndarray, clusters, n_boot: int, seed: int) -> np.ndarray:
    sums, counts = _cluster_sums(values, clusters)
    return np.concatenate([(w @ sums) / (w @ counts) for w in _weight_blocks(len(sums), n_boot, seed)])


def _check(values, clusters, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) == 0:
        raise ValueError(f"{name}: no scores")
    if len(np.asarray(clusters).reshape(-1)) != len(v):
        raise ValueError(f"{name}: {len(v)} scores but {len(np.asarray(clusters).reshape(-1))} cluster ids")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: scores must be finite (drop missing judgments first and count them)")
    return v


def _paired(candidate, baseline, clusters, name: str) -> np.ndarray:
    """candidate − baseline on aligned rows, both checked."""
    n_c, n_b = np.size(candidate), np.size(baseline)
    if n_c != n_b:
        raise ValueError(f"{name}: {n_c} candidate rows but {n_b} baseline rows")
    return _check(candidate, clusters, f"{name} (candidate)") - _check(baseline, clusters, f"{name} (baseline)")


def mean_interval(scores, clusters, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean score and its percentile cluster-bootstrap interval."""
    v = _check(scores, clusters, "mean_interval")
    means = _bootstrap_means(v, np.asarray(clusters).reshape(-1), n_boot, seed)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired_difference(candidate, baseline, clusters, level: float = 0.95, n_boot: int = 10_000,
                      seed: int = 0) -> tuple[float, float, float]:
    """(mean difference, low, high) of candidate − baseline on aligned rows, questions resampled together."""
    d = _paired(candidate, baseline, clusters, "paired_difference")
    return mean_interval(d, clusters, level=level, n_boot=n_boot, seed=seed)


def clustered_se(scores, clusters) -> float:
    """Analytic clustered standard error of the mean; nan with a single cluster (no between-question spread)."""
    v = _check(scores, clusters, "clustered_se")
    inv, g = _cluster_index(clusters)
    if g < 2:
        return float("nan")
    r = np.bincount(inv, weights=v - v.mean(), minlength=g)  # per-question sums of residuals
    # SE = sqrt(C/(C−1) · Σ_c (Σ_{u∈c} (s_u − s̄))² / n²): the CR1 sandwich estimator for a mean.
    return math.sqrt(g / (g - 1) * float(r @ r)) / len(v)


@dataclass(frozen=True)
class Estimate:
    """A mean (or mean difference) with its cluster-bootstrap interval and the analytic clustered SE."""

    mean: float
    low: float
    high: float
    se: float  # clustered standard error: the cross-check of the interval (half-width ≈ 1.96·se at 95%)
    level: float
    n_rows: int
    n_clusters: int

    @property
    def half_width(self) -> float:
        """Half the interval's width."""
        return (self.high - self.low) / 2


def estimate(scores, clusters, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> Estimate:
    """The mean of `scores` with its cluster-bootstrap interval, clustered SE and counts."""
    mean, low, high = mean_interval(scores, clusters, level=level, n_boot=n_boot, seed=seed)
    _, g = _cluster_index(clusters)
    return Estimate(mean, low, high, clustered_se(scores, clusters), level, int(np.size(scores)), g)


def paired_estimate(candidate, baseline, clusters, level: float = 0.95, n_boot: int = 10_000,
                    seed: int = 0) -> Estimate:
    """The mean of candidate − baseline on aligned rows as an Estimate (same draws as paired_difference)."""
    d = _paired(candidate, baseline, clusters, "paired_estimate")
    return estimate(d, clusters, level=level, n_boot=n_boot, seed=seed)


class Present(NamedTuple):
    """Rows where every array has a judgment, and how many rows were dropped."""

    arrays: list[np.ndarray]
    clusters: np.ndarray
    n_missing: int


def _missing(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "fc":
        return np.isnan(a)
    if a.dtype.kind == "O":
        return np.fromiter((x is None or (isinstance(x, float) and math.isnan(x)) for x in a), bool, len(a))
    return np.zeros(len(a), bool)  # ints, bools, strings: never missing


def drop_missing(*arrays, clusters) -> Present:
    """Keep the rows where no array is missing (None or NaN); a pair missing either side is dropped whole."""
    arrs = [np.asarray(a).reshape(-1) for a in arrays]
    cl = np.asarray(clusters).reshape(-1)
    if any(len(a) != len(cl) for a in arrs):
        raise ValueError(f"drop_missing: arrays of lengths {[len(a) for a in arrs]} but {len(cl)} cluster ids")
    keep = ~np.logical_or.reduce([_missing(a) for a in arrs]) if arrs else np.ones(len(cl), bool)
    return Present([a[keep] for a in arrs], cl[keep], int(len(cl) - keep.sum()))


_WIN_WORDS = {"win": 1.0, "tie": 0.5, "loss": 0.0}
_VERDICT_WORDS = {"a": 1.0, "tie": 0.5, "b": 0.0}  # harness.judges.parse.Verdict, from A's side


def _outcome_values(outcomes, words: dict[str, float], name: str) -> np.ndarray:
    """Outcomes as 1 / 0.5 / 0 floats; words (case-insensitive) are mapped, anything else refused."""
    a = np.asarray(outcomes).reshape(-1)
    allowed = ", ".join(repr(w) for w in words) + " or 1, 0.5, 0"
    if a.dtype.kind in "USO":
        try:
            a = np.array([words[x.lower()] if isinstance(x, str) else np.nan if x is None else float(x)
                          for x in a.tolist()], dtype=np.float64)
        except KeyError as e:
            raise ValueError(f"{name}: unknown outcome {e.args[0]!r}; use {allowed}") from None
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: outcomes must not be missing (drop missing judgments first and count them)")
    bad = ~np.isin(a, (0.0, 0.5, 1.0))
    if bad.any():
        raise ValueError(f"{name}: outcome {a[bad][0]:g} is not one of {allowed}")
    return a


def win_rate(outcomes, clusters, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(rate, low, high): the candidate's win rate over pairwise judgments, ties counting half."""
    return mean_interval(_outcome_values(outcomes, _WIN_WORDS, "win_rate"), clusters, level, n_boot, seed)


def _bt_loglik(theta: np.ndarray, wins: np.ndarray) -> np.ndarray:
    """[B] Σ_ij wins_ij · log P(i beats j) with P = 1/(1 + exp(θj − θi))."""
    return -(wins * np.logaddexp(0.0, theta[:, None, :] - theta[:, :, None])).sum((1, 2))


def _bt_fit(wins: np.ndarray, max_iter: int = 200, tol: float = 1e-10) -> np.ndarray:
    """[B, M] centred maximum-likelihood log-strengths for B win matrices [B, M, M] (wins[b, i, j]: i over j)."""
    bsz, m = wins.shape[:2]
    games = wins + wins.transpose(0, 2, 1)
    theta = np.zeros((bsz, m))
    ll = _bt_loglik(theta, wins)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(theta[:, None, :] - theta[:, :, None]))  # [B, M, M] P(i beats j)
        grad = wins.sum(2) - (games * p).sum(2)  # [B, M]
        h = games * p * (1.0 - p)
        lap = -h  # minus the Hessian: a weighted graph Laplacian
        lap[:, np.arange(m), np.arange(m)] = h.sum(2)
        # Strengths are defined up to a constant: + 1/m in every cell fixes the step to sum 0.
        step = np.linalg.solve(lap + 1.0 / m, grad[..., None])[..., 0]
        for _ in range(40):  # halve where the likelihood fell: plain Newton overshoots near-certain wins
            new = theta + step
            new_ll = _bt_loglik(new, wins)
            worse = new_ll < ll - 1e-12 * np.abs(ll)
            if not worse.any():
                break
            step[worse] /= 2
        theta, ll = new - new.mean(1, keepdims=True), new_ll
        if np.abs(step).max() < tol:
            return theta
    raise ValueError(f"bradley_terry: the fit did not converge in {max_iter} Newton steps")


def _win_matrices(pair_wins: np.ndarray, pair_games: np.ndarray, pi, pj, m: int, prior: float) -> np.ndarray:
    """[B, M, M] wins from per-pair sums [B, P] of the lower-indexed model's wins, plus the virtual ties."""
    w = np.full((len(pair_wins), m, m), prior / 2)
    w[:, np.arange(m), np.arange(m)] = 0.0
    w[:, pi, pj] += pair_wins
    w[:, pj, pi] += pair_games - pair_wins
    return w


def bradley_terry(model_a, model_b, outcome, clusters=None, level: float = 0.95, n_boot: int = 1000,
                  seed: int = 0, anchor: str | None = None, prior: float = 1.0) -> pd.DataFrame:
    """Bradley–Terry log-strengths with cluster-bootstrap intervals: a DataFrame (strength, low, high, games).

    P(i beats j) = 1 / (1 + exp(θj − θi)); θ is centred to mean 0, or the `anchor` model is fixed at
    0 (its interval is then 0 to 0). outcome: 1 / 'A' = A won, 0 / 'B' = B won, 0.5 / 'tie' = half
    a win each. `prior` adds that many virtual ties between every two models, so a model that never
    lost (or never won) gets a finite strength. It shrinks differences by a fraction of roughly
    prior/(comparisons per pair): strengths move by 0.007 for 5 models and 1,000 comparisons, by 0.1
    with 200 (pass a smaller prior to shrink less). clusters (default: each comparison its own) are resampled
    together. Rows are sorted by strength, strongest first; `games` counts real comparisons.
    """
    import pandas as pd  # only this function needs it

    y = _outcome_values(outcome, _VERDICT_WORDS, "bradley_terry")
    a, b = np.asarray(model_a).reshape(-1), np.asarray(model_b).reshape(-1)
    n = len(y)
    if not len(a) == len(b) == n:
        raise ValueError(f"bradley_terry: {len(a)} model_a, {len(b)} model_b and {n} outcomes; they must align")
    if np.any(a == b):
        raise ValueError(f"bradley_terry: model {a[a == b][0]!r} is compared with itself")
    if not prior > 0:
        raise ValueError(f"bradley_terry: prior must be > 0 virtual ties per pair, got {prior}")
    names, idx = np.unique(np.concatenate([a, b]), return_inverse=True)
    m = len(names)
    if anchor is not None and anchor not in names:
        raise ValueError(f"bradley_terry: anchor {anchor!r} is not among the models {names.tolist()}")
    ia, ib = idx[:n], idx[n:]
    lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
    pairs, p_inv = np.unique(lo * m + hi, return_inverse=True)
    inv, g = _cluster_index(np.arange(n) if clusters is None else clusters)
    if len(inv) != n:
        raise ValueError(f"bradley_terry: {n} outcomes but {len(inv)} cluster ids")
    key = inv * len(pairs) + p_inv.reshape(-1)  # per (cluster, pair) sums: [g, P]
    wins = np.bincount(key, weights=np.where(ia == lo, y, 1.0 - y), minlength=g * len(pairs)).reshape(g, -1)
    games = np.bincount(key, minlength=g * len(pairs)).reshape(g, -1).astype(np.float64)
    pi, pj = pairs // m, pairs % m

    def fit(pw: np.ndarray, pg: np.ndarray) -> np.ndarray:
        theta = _bt_fit(_win_matrices(pw, pg, pi, pj, m, prior))
        return theta if anchor is None else theta - theta[:, [int(np.searchsorted(names, anchor))]]

    point = fit(wins.sum(0)[None], games.sum(0)[None])[0]
    boots = np.concatenate([fit(w @ wins, w @ games) for w in _weight_blocks(g, n_boot, seed)])  # [n_boot, M]
    q = (1 - level) / 2
    table = pd.DataFrame({"strength": point, "low": np.quantile(boots, q, axis=0),
                          "high": np.quantile(boots, 1 - q, axis=0),
                          "games": np.bincount(np.concatenate([ia, ib]), minlength=m)},
                         index=pd.Index(names, name="model"))
    return table.sort_values("strength", ascending=False, kind="stable")


def _z_sum(power: float, level: float) -> float:
    """z_{1−α/2} + z_power for a two-sided test at `level`."""
    if not (0 < level < 1 and 0 < power < 1):
        raise ValueError(f"level and power must lie strictly between 0 and 1, got level={level}, power={power}")
    z = NormalDist()
    return z.inv_cdf(1 - (1 - level) / 2) + z.inv_cdf(power)


def mde(candidate_minus_baseline, clusters, power: float = 0.8, level: float = 0.95) -> float:
    """Minimum detectable effect, (z_{1−α/2} + z_power)·sd_d/√C, sd_d over per-question mean differences."""
    d = _check(candidate_minus_baseline, clusters, "mde")
    inv, g = _cluster_index(clusters)
    if g < 2:
        raise ValueError("mde: needs at least 2 questions to measure the spread of differences")
    per_question = np.bincount(inv, weights=d) / np.bincount(inv)
    return _z_sum(power, level) * float(per_question.std(ddof=1)) / math.sqrt(g)


def questions_for(effect: float, sd_d: float, power: float = 0.8, level: float = 0.95) -> int:
    """Questions needed to detect a true difference `effect` given the per-question sd of differences."""
    if not effect > 0 or not sd_d >= 0:
        raise ValueError(f"questions_for: effect must be > 0 and sd_d >= 0, got {effect} and {sd_d}")
    return max(2, math.ceil((_z_sum(power, level) * sd_d / effect) ** 2 - 1e-9))


def questions_to_decide(e: Estimate, margin: float) -> int | None:
    """Questions at which the interval, same difference assumed, clears the margin; None on the margin."""
    room = abs(abs(e.mean) - margin)  # the half-width that puts the interval on one side of ±margin
    if room == 0 or not e.half_width > 0:
        return None
    return math.ceil(e.n_clusters * (e.half_width / room) ** 2 - 1e-9)  # half-width shrinks as 1/√C


@dataclass(frozen=True)
class VarianceComponents:
    """Parts of the score variance; Var(mean) ≈ (ω² + σ²_gen/K + σ²_judge/(K·J))/C."""

    omega2: float  # between questions: only more questions reduce its share
    sigma2_gen: float  # between sampled answers to one question: reduced by samples K
    sigma2_judge: float  # between judge repeats on one answer: reduced by judge repeats J
    K: float  # samples per question (the mean, when unbalanced)
    J: float  # judge repeats per answer (the mean, when unbalanced)
    C: int  # questions
    balanced: bool

    def var_mean_at(self, questions: int | None = None, samples: float | None = None,
                    repeats: float | None = None) -> float:
        """Var(mean) for a suite with other numbers of questions, samples or judge repeats."""
        c, k, j = questions or self.C, samples or self.K, repeats or self.J
        return (self.omega2 + self.sigma2_gen / k + self.sigma2_judge / (k * j)) / c

    @property
    def var_mean(self) -> float:
        """Var(mean) of this suite's design."""
        return self.var_mean_at()


def _codes(keys) -> np.ndarray:
    return np.unique(np.asarray(keys).reshape(-1), return_inverse=True)[1].reshape(-1)


def variance_components(scores, question, sample=None, repeat=None) -> VarianceComponents:
    """Nested method-of-moments variance components: questions ⊃ sampled answers ⊃ judge repeats.

    Rows sharing (question, sample) are judge repeats of one answer; each (question, sample,
    repeat) must be one row (pass one turn at a time, or average turns first). Without `sample`,
    rows of a question are distinct samples (if `repeat` is None) or repeats of one answer. A level
    with one member everywhere is not separable: its variance is 0 and lands in the level above.
    Balanced data give the nested one-way ANOVA estimates; unbalanced data use per-group averages
    (cell means weighted equally, mean 1/J and 1/K in place of 1/J and 1/K), an approximation.
    Negative estimates are clipped at 0.
    """
    v = _check(scores, question, "variance_components")
    n = len(v)
    q = _codes(question)
    s = np.arange(n) if sample is None and repeat is None else _codes(np.zeros(n) if sample is None else sample)
    r = np.zeros(n, np.int64) if repeat is None else _codes(repeat)
    if len(s) != n or len(r) != n:
        raise ValueError(f"variance_components: {n} scores but {len(s)} sample and {len(r)} repeat ids")
    cell = _codes(q * (s.max() + 1) + s)
    if len(np.unique(cell * (r.max() + 1) + r)) != n:
        raise ValueError("variance_components: two rows share a question, sample and judge repeat; "
                         "pass one turn at a time or average the turns first")
    n_cell = np.bincount(cell).astype(np.float64)
    cell_mean = np.bincount(cell, weights=v) / n_cell
    cell_q = np.zeros(len(n_cell), np.int64)
    cell_q[cell] = q
    c = int(q.max()) + 1
    if c < 2:
        raise ValueError("variance_components: needs at least 2 questions")
    k_c = np.bincount(cell_q, minlength=c).astype(np.float64)
    q_mean = np.bincount(cell_q, weights=cell_mean) / k_c

    df_judge = n - len(n_cell)
    judge = float(((v - cell_mean[cell]) ** 2).sum() / df_judge) if df_judge else 0.0
    df_gen = len(n_cell) - c
    gen = (float(((cell_mean - q_mean[cell_q]) ** 2).sum() / df_gen) - judge * float(np.mean(1 / n_cell))
           if df_gen else 0.0)
    judge_per_q = np.bincount(cell_q, weights=1 / n_cell) / k_c**2  # mean_k(1/J_ck) / K_c
    omega = float(q_mean.var(ddof=1)) - gen * float(np.mean(1 / k_c)) - judge * float(judge_per_q.mean())
    balanced = bool(np.all(k_c == k_c[0]) and np.all(n_cell == n_cell[0]))
    return VarianceComponents(max(omega, 0.0), max(gen, 0.0), max(judge, 0.0), float(k_c.mean()),
                              float(n_cell.mean()), c, balanced)


class Outcome(str, Enum):
    """What a gate decided about candidate − baseline against the practical margin."""

    improved = "improved"
    equivalent = "equivalent"
    regressed = "regressed"
    inconclusive = "inconclusive"


def gate(low: float, high: float, margin: float) -> Outcome:
    """improved if low > +m, regressed if high < −m, equivalent if inside ±m, otherwise inconclusive."""
    if not margin >= 0:
        raise ValueError(f"gate: margin must be >= 0, got {margin}")
    if not low <= high:
        raise ValueError(f"gate: interval low {low} must be <= high {high} (and not nan)")
    if low > margin:
        return Outcome.improved
    if high < -margin:
        return Outcome.regressed
    if -margin <= low and high <= margin:
        return Outcome.equivalent
    return Outcome.inconclusive


def gate_difference(candidate, baseline, clusters, margin: float, level: float = 0.90, n_boot: int = 10_000,
                    seed: int = 0) -> tuple[Outcome, Estimate]:
    """Gate candidate − baseline on the paired interval (90% two-sided: one-sided 95% per side)."""
    if not margin >= 0:
        raise ValueError(f"gate_difference: margin must be >= 0, got {margin}")
    e = paired_estimate(candidate, baseline, clusters, level=level, n_boot=n_boot, seed=seed)
    return gate(e.low, e.high, margin), e
