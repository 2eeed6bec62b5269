"""How many questions a comparison needs: the minimum detectable effect and the questions to decide."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from harness.analysis.stats.bootstrap import Estimate, _check, _cluster_index


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
