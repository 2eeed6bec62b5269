"""The gate: a difference's interval against a practical margin gives one of four outcomes.

    outcome, e = gate_difference(candidate, baseline, clusters, margin=0.25)
"""

from __future__ import annotations

from enum import Enum

from harness.analysis.stats.bootstrap import Estimate, paired_estimate


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
