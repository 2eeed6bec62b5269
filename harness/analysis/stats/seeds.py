"""A recipe trained with several seeds, measured on shared questions: intervals that carry both noises.

    e = seed_estimate(diff, seed=seeds, question=qids)          # mean over seeds, interval over seeds and questions
    p = prob_best({"varm": (scores, seeds, qids), "ties": ...})  # how often each recipe comes out on top

Every seed's model answers the same questions, so seeds and questions are crossed, not nested:
a cell (s, q) holds the mean of the rows of question q for seed s, and the recipe's value is the
mean over cells. With S seeds and Q questions (only questions every seed has are used), the
two-way random-effects model d_sq = μ + a_s + b_q + e_sq gives, from the mean squares MS_S
(seeds, S−1 df), MS_Q (questions, Q−1 df) and MS_E (residual, (S−1)(Q−1) df),

    Var(mean) = σ²_seed/S + MS_Q/(S·Q),   σ²_seed = max(0, (MS_S − MS_E)/Q),

and the interval is mean ± t_df · √Var with Satterthwaite's df. With σ²_seed = 0 this is the
question-clustered interval of the per-question means; with one seed it is the cluster bootstrap
of `bootstrap.py`. The seed part has only S−1 df: with 2 or 3 seeds that vary by more than the
question standard error, the interval covers less than its level (simulated in tests/harness/
test_stats_seeds.py); the report says so where it applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

from harness.analysis.stats.bootstrap import Estimate, _check, estimate


@dataclass(frozen=True)
class SeedEstimate(Estimate):
    """An Estimate over seeds and questions: `se` is √Var(mean); the seed part of it is `seed_sd`/√seeds."""

    n_seeds: int = 1
    df: float = math.inf  # Satterthwaite's degrees of freedom of the t quantile (inf: the bootstrap interval)
    seed_sd: float = 0.0  # estimated SD of a seed's effect (σ_seed), 0 when seeds vary no more than noise
    question_se: float = 0.0  # √(MS_Q/(S·Q)): the interval's half-width over t if seeds did not vary

    @property
    def seed_dominated(self) -> bool:
        """Few seeds whose spread exceeds the question noise: the interval may cover less than its level."""
        return self.n_seeds <= 3 and self.seed_sd / math.sqrt(self.n_seeds) > self.question_se


def cells(values, seed, question) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[S, Q] cell means (rows of one seed and question averaged) over the questions every seed has;
    with the seed labels and the question labels, both sorted."""
    v = _check(values, question, "cells")
    s_ids, s = np.unique(np.asarray(seed).reshape(-1), return_inverse=True)
    q_ids, q = np.unique(np.asarray(question).reshape(-1), return_inverse=True)
    if len(s) != len(v):
        raise ValueError(f"cells: {len(v)} scores but {len(s)} seed labels")
    key = s.reshape(-1) * len(q_ids) + q.reshape(-1)
    n = np.bincount(key, minlength=len(s_ids) * len(q_ids)).reshape(len(s_ids), -1)
    total = np.bincount(key, weights=v, minlength=len(s_ids) * len(q_ids)).reshape(len(s_ids), -1)
    shared = (n > 0).all(0)
    if not shared.any():
        raise ValueError("cells: no question is answered under every seed")
    return total[:, shared] / n[:, shared], s_ids, q_ids[shared]


def seed_estimate(values, seed, question, level: float = 0.95, n_boot: int = 10_000,
                  boot_seed: int = 0) -> SeedEstimate:
    """The mean over seeds and shared questions with an interval that carries seed and question noise."""
    d, _, q_ids = cells(values, seed, question)
    n_seeds, n_questions = d.shape
    n_rows = int(np.size(values))
    if n_seeds == 1:
        e = estimate(d[0], q_ids, level=level, n_boot=n_boot, seed=boot_seed)
        return SeedEstimate(e.mean, e.low, e.high, e.se, level, n_rows, e.n_clusters, 1, math.inf, 0.0, e.se)
    if n_questions < 2:
        raise ValueError("seed_estimate: needs at least 2 questions shared by every seed")
    mean = float(d.mean())
    seed_means, question_means = d.mean(1), d.mean(0)
    ms_s = n_questions * float(seed_means.var(ddof=1))
    ms_q = n_seeds * float(question_means.var(ddof=1))
    resid = d - seed_means[:, None] - question_means[None, :] + mean
    df_e = (n_seeds - 1) * (n_questions - 1)
    ms_e = float((resid ** 2).sum()) / df_e
    sigma2_seed = max(0.0, (ms_s - ms_e) / n_questions)
    c = 1.0 / (n_seeds * n_questions)
    var = sigma2_seed / n_seeds + c * ms_q
    if sigma2_seed > 0:  # Satterthwaite: Var = c·MS_S + c·MS_Q − c·MS_E
        denom = (c * ms_s) ** 2 / (n_seeds - 1) + (c * ms_q) ** 2 / (n_questions - 1) + (c * ms_e) ** 2 / df_e
        df = var ** 2 / denom
    else:
        df = float(n_questions - 1)
    se = math.sqrt(var)
    half = float(student_t.ppf((1 + level) / 2, df)) * se if se > 0 else 0.0
    return SeedEstimate(mean, mean - half, mean + half, se, level, n_rows, n_questions, n_seeds, df,
                        math.sqrt(sigma2_seed), math.sqrt(c * ms_q))


def prob_best(recipes: dict[str, tuple], n_boot: int = 2000, boot_seed: int = 0) -> dict[str, float]:
    """How often each recipe has the highest mean when questions (shared by all) and each recipe's own seeds
    are resampled; recipes are `name -> (values, seed, question)`. Ties share the win."""
    if not recipes:
        return {}
    tables = {name: cells(*args) for name, args in recipes.items()}
    shared = set.intersection(*(set(q.tolist()) for _, _, q in tables.values()))
    if not shared:
        raise ValueError("prob_best: the recipes share no question")
    order = sorted(shared)
    mats = []
    for d, _, q in tables.values():
        pos = {k: i for i, k in enumerate(q.tolist())}
        mats.append(d[:, [pos[k] for k in order]])
    rng = np.random.default_rng(boot_seed)
    g = len(order)
    wins = np.zeros(len(mats))
    for start in range(0, n_boot, 500):
        b = min(500, n_boot - start)
        qw = rng.multinomial(g, np.full(g, 1.0 / g), size=b) / g  # [b, Q] question weights
        means = np.stack([_seed_resampled(m, qw, rng) for m in mats], axis=1)  # [b, R]
        best = means >= means.max(1, keepdims=True) - 1e-12
        wins += (best / best.sum(1, keepdims=True)).sum(0)
    return {name: float(w / n_boot) for name, w in zip(recipes, wins)}


def _seed_resampled(d: np.ndarray, question_weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[b] means of one recipe: its seeds drawn with replacement, questions weighted by the shared draw."""
    n_seeds = d.shape[0]
    sw = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=len(question_weights)) / n_seeds
    return np.einsum("bs,sq,bq->b", sw, d, question_weights)

