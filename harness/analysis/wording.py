"""The one place where numbers become words: estimates, gate outcomes, detectable effects, missing counts.

    fmt_estimate(e)                    # '7.12 (95% interval 6.80 to 7.41)'
    fmt_estimate(d, signed=True)       # '+0.42 (95% interval −0.05 to +0.90)'
    gate_sentence(outcome, d, 0.25, baseline="pivot", candidate="merged-ties")
    mde_sentence(0.45, 80)             # 'With 80 questions this suite can detect differences of about 0.45 points ...'
    missing_sentence(3, 160)           # '3 of 160 judgments (1.9%) were missing ...'

Every function returns a string. Negative numbers carry the true minus sign U+2212 (also when not
`signed`); `signed` adds "+" to positive differences; a value that rounds to zero has no sign.
Intervals are called intervals: the words "significant" and "p-value" never appear (DESIGN.md
section 3.5), because a gate decides against a practical margin, not against zero.
"""

from __future__ import annotations

from harness.analysis.stats import Estimate, Outcome, SeedEstimate, VarianceComponents
from reports.data import Verdict
from reports.fmt import MINUS, fmt_interval, fmt_level, fmt_number  # noqa: F401  (one formatting for tables and reports)


def fmt_estimate(e: Estimate | tuple[float, float, float], digits: int = 2, signed: bool = False,
                 level: float = 0.95) -> str:
    """'7.12 (95% interval 6.80 to 7.41)'; signed for differences; `level` only for a (mean, low, high) tuple."""
    if isinstance(e, Estimate):
        mean, low, high, level = e.mean, e.low, e.high, e.level
    else:
        mean, low, high = e

    def n(x: float) -> str:
        return fmt_number(x, digits, signed)

    return f"{n(mean)} ({fmt_level(level)} interval {n(low)} to {n(high)})"


def _where(outcome: Outcome, e: Estimate, margin: float, digits: int) -> str:
    """Where the interval lies relative to ±margin, as the end of the gate sentence."""
    m = fmt_number(margin, digits)
    if outcome is Outcome.improved:
        return f"lies above the margin {fmt_number(margin, digits, signed=True)}"
    if outcome is Outcome.regressed:
        return f"lies below the margin {fmt_number(-margin, digits)}"
    if outcome is Outcome.equivalent:
        return f"lies within the margin ±{m}"
    crosses_low, crosses_high = e.low < -margin <= e.high, e.low <= margin < e.high
    if crosses_low and crosses_high and margin > 0:
        return f"is wider than the margin ±{m} on both sides"
    edge = fmt_number(margin, digits, signed=True) if crosses_high else fmt_number(-margin, digits)
    return f"straddles the margin {edge}"


def gate_sentence(outcome: Outcome | str, estimate: Estimate, margin: float, baseline: str, candidate: str,
                  digits: int = 2, questions_needed: int | None = None) -> str:
    """One sentence: the gate's outcome, the difference with its interval, and the margin."""
    outcome = Outcome(outcome)
    text = (f"{candidate} vs {baseline}: {outcome.value} — difference "
            f"{fmt_estimate(estimate, digits, signed=True)} {_where(outcome, estimate, margin, digits)}")
    if outcome is Outcome.inconclusive and questions_needed is not None:
        text += (f"; about {questions_needed} questions (now {estimate.n_clusters}) would narrow the interval "
                 "enough to decide, if the difference stays as it is")
    return text + "."


def mde_sentence(mde: float, n_questions: int, level: float = 0.95, power: float = 0.8, digits: int = 2,
                 unit: str = "points") -> str:
    """'With 80 questions this suite can detect differences of about 0.45 points (80% power, 95% level).'"""
    amount = fmt_number(mde, digits) + (f" {unit}" if unit else "")
    return (f"With {n_questions} questions this suite can detect differences of about {amount} "
            f"({fmt_level(power)} power, {fmt_level(level)} level).")


def missing_sentence(n_missing: int, n_total: int) -> str:
    """How many judgments were missing (out of all expected) and that they are left out, not scored 0."""
    if not 0 <= n_missing <= n_total:
        raise ValueError(f"missing_sentence: {n_missing} missing out of {n_total} judgments is impossible")
    if n_missing == 0:
        return f"None of the {n_total} judgments is missing."
    share = 100 * n_missing / n_total
    pct = "<0.1%" if share < 0.1 else f"{share:.1f}%"
    was, are = ("was", "is") if n_missing == 1 else ("were", "are")
    return (f"{n_missing} of {n_total} judgments ({pct}) {was} missing (no verdict could be read) "
            f"and {are} left out of the scores, not counted as 0.")


def win_rate_sentence(candidate: str, baseline: str, rate: tuple[float, float, float], level: float = 0.95) -> str:
    """'a vs b: a wins 62% of pairwise judgments, ties counting half (95% interval 55% to 69%).'"""
    mean, low, high = (f"{100 * x:.0f}%" for x in rate)
    return (f"{candidate} vs {baseline}: {candidate} wins {mean} of pairwise judgments, ties counting half "
            f"({fmt_level(level)} interval {low} to {high}).")


def variance_sentence(vc: VarianceComponents) -> str:
    """Which share of Var(mean) each source contributes, and the knob that reduces it."""
    total = vc.var_mean
    if not total > 0:
        return "The scores do not vary between questions, answers or judge repeats."
    parts = (vc.omega2 / vc.C, vc.sigma2_gen / (vc.K * vc.C), vc.sigma2_judge / (vc.K * vc.J * vc.C))
    q, g, j = (f"{100 * p / total:.0f}%" for p in parts)
    return (f"Of the variance of the mean, {q} comes from question difficulty (more questions: now {vc.C}), "
            f"{g} from generation (more samples per question: now {vc.K:g}) and {j} from the judge "
            f"(more judge repeats: now {vc.J:g}).")


def seed_caveat(e: SeedEstimate) -> str:
    """The warning for an interval over few seeds that vary more than the question noise."""
    return (f"With {e.n_seeds} seeds that differ by more than the question noise (seed SD "
            f"{fmt_number(e.seed_sd)}), this interval may cover less than {fmt_level(e.level)} of the time; "
            "more seeds would pin it down.")


def _best(verdicts: list[Verdict]) -> Verdict:
    return max(verdicts, key=lambda v: v.diff)


def _est(v: Verdict) -> str:
    seeds = f" over {v.seeds} seeds" if v.seeds > 1 else ""
    return f"{fmt_estimate((v.diff, v.low, v.high), signed=True, level=v.level)}{seeds}"


def recipe_answer(verdicts: list[Verdict], control: str | None, margin: float | None,
                  base: str | None = None) -> str:
    """One plain sentence: did the teachers help beyond gold-label training (the control)? A run without
    fusion passes `base` instead (its gate's baseline): did any recipe beat it?"""
    if control is None and base is None:
        return ("This run has no gold-label control, so it cannot tell whether the teachers helped beyond "
                "training on the same data.")
    ref = f"gold-label training ({control})" if control else str(base)
    vc = [v for v in verdicts if v.baseline == (control or base)]
    if not vc:
        return (f"No recipe shares judged questions with the "
                f"{f'gold-label control ({control})' if control else f'baseline ({base})'}: no answer.")
    best = _best(vc)
    if margin is None:
        side = ("lies above zero" if best.low > 0 else "lies below zero" if best.high < 0 else "covers zero")
        return (f"Against {ref}, the best recipe, {best.recipe}, is {_est(best)}; "
                f"its interval {side} (the suite sets no margin, so nothing is decided).")
    m = fmt_number(margin)
    improved = [v for v in vc if v.outcome == "improved"]
    if improved:
        names = ", ".join(v.recipe for v in improved)
        return (f"Yes: {names} beat{'s' if len(improved) == 1 else ''} {ref} by more "
                f"than the margin ±{m}; the best, {best.recipe}, by {_est(best)}.")
    if all(v.outcome == "regressed" for v in vc):
        return (f"No: every recipe is worse than {ref} by more than the margin ±{m}; "
                f"the closest, {best.recipe}, is {_est(best)}.")
    if all(v.outcome in ("equivalent", "regressed") for v in vc):
        nothing = f"the teachers add nothing beyond {ref}" if control else f"no recipe improves on {ref}"
        return (f"No: {nothing} at the margin ±{m}; "
                f"the best recipe, {best.recipe}, is {_est(best)}, within the margin.")
    return (f"Not shown: no recipe beats {ref} by more than ±{m} with this many "
            f"questions and seeds; the best, {best.recipe}, is {_est(best)}.")
