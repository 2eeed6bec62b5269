"""Where a score's noise comes from: questions, sampled answers and judge repeats (which knob buys precision).

    vc = variance_components(scores, question, sample, repeat)
    vc.var_mean_at(questions=2 * vc.C)                                   # Var(mean) with twice the questions
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.analysis.stats.bootstrap import _check


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
