"""Statistics with honest intervals: cluster bootstrap over questions, paired differences.

    mean, lo, hi = mean_interval(scores, clusters)                       # 95% cluster bootstrap
    diff, lo, hi = paired_difference(candidate, baseline, clusters)      # paired on the same rows

Rows are judged units (one per turn or sample); `clusters` gives each row's question id. Questions
are resampled with replacement, keeping every row of a question together, because turns and
samples of one question are not independent. The interval is the percentile interval of the
resampled means (ratio of resampled sums to resampled row counts, so unequal cluster sizes are
weighted by rows, as the point estimate is).
"""

from __future__ import annotations

import numpy as np

_BLOCK = 1000  # resamples per block: bounds memory at _BLOCK x n_clusters counts


def _cluster_sums(values: np.ndarray, clusters) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of values and row counts."""
    _, inv = np.unique(np.asarray(clusters), return_inverse=True)
    return np.bincount(inv, weights=values), np.bincount(inv).astype(np.float64)


def _bootstrap_means(values: np.ndarray, clusters, n_boot: int, seed: int) -> np.ndarray:
    sums, counts = _cluster_sums(values, clusters)
    g = len(sums)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _BLOCK):
        b = min(_BLOCK, n_boot - start)
        w = rng.multinomial(g, np.full(g, 1.0 / g), size=b).astype(np.float64)  # [b, g] draws per cluster
        out[start:start + b] = (w @ sums) / (w @ counts)
    return out


def _check(values, clusters, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) == 0:
        raise ValueError(f"{name}: no scores")
    if len(np.asarray(clusters).reshape(-1)) != len(v):
        raise ValueError(f"{name}: {len(v)} scores but {len(np.asarray(clusters).reshape(-1))} cluster ids")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: scores must be finite (drop missing judgments first and count them)")
    return v


def mean_interval(scores, clusters, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean score and its percentile cluster-bootstrap interval."""
    v = _check(scores, clusters, "mean_interval")
    means = _bootstrap_means(v, np.asarray(clusters).reshape(-1), n_boot, seed)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired_difference(candidate, baseline, clusters, level: float = 0.95, n_boot: int = 10_000,
                      seed: int = 0) -> tuple[float, float, float]:
    """(mean difference, low, high) of candidate − baseline on aligned rows, questions resampled together."""
    n_c, n_b = np.size(candidate), np.size(baseline)
    if n_c != n_b:
        raise ValueError(f"paired_difference: {n_c} candidate rows but {n_b} baseline rows")
    c = _check(candidate, clusters, "paired_difference (candidate)")
    b = _check(baseline, clusters, "paired_difference (baseline)")
    return mean_interval(c - b, clusters, level=level, n_boot=n_boot, seed=seed)
