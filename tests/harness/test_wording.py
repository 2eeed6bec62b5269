"""Sentences from numbers: the numbers appear, signs are right, and no test-of-significance words."""

import itertools
import re

import pytest

from harness.analysis.stats import Estimate, Outcome, VarianceComponents, gate
from harness.analysis.wording import (
    MINUS,
    fmt_estimate,
    fmt_number,
    gate_sentence,
    mde_sentence,
    missing_sentence,
    variance_sentence,
    win_rate_sentence,
)

FORBIDDEN = re.compile(r"signific|p-value|p value", re.I)


def _diff(mean, low, high, level=0.90, n_clusters=80):
    return Estimate(mean, low, high, se=(high - low) / 3.3, level=level, n_rows=2 * n_clusters, n_clusters=n_clusters)


def test_numbers_use_the_true_minus_sign_and_plus_only_when_signed():
    assert MINUS == "\u2212"
    assert fmt_number(-0.05) == "\u22120.05"
    assert fmt_number(0.9, signed=True) == "+0.90"
    assert fmt_number(0.9) == "0.90"
    assert fmt_number(-0.004, signed=True) == "0.00"  # rounds to zero: no sign
    assert fmt_number(1.23456, digits=3) == "1.235"
    assert fmt_number(float("nan")) == "n/a" and fmt_number(None) == "n/a"


def test_fmt_estimate_for_scores_and_differences():
    e = Estimate(7.123, 6.801, 7.409, se=0.15, level=0.95, n_rows=160, n_clusters=80)
    assert fmt_estimate(e) == "7.12 (95% interval 6.80 to 7.41)"
    assert fmt_estimate((0.42, -0.05, 0.9), signed=True) == "+0.42 (95% interval \u22120.05 to +0.90)"
    assert fmt_estimate((0.42, -0.05, 0.9), level=0.9, digits=1, signed=True) == "+0.4 (90% interval \u22120.1 to +0.9)"
    assert fmt_estimate(_diff(-0.61, -0.95, -0.27), signed=True) == \
        "\u22120.61 (90% interval \u22120.95 to \u22120.27)"


def test_gate_sentences_state_outcome_interval_and_margin():
    regressed = gate_sentence(Outcome.regressed, _diff(-0.61, -0.95, -0.27), 0.25, "pivot", "merged-ties")
    assert regressed == ("merged-ties vs pivot: regressed — difference \u22120.61 (90% interval \u22120.95 to "
                         "\u22120.27) lies below the margin \u22120.25.")
    improved = gate_sentence("improved", _diff(0.61, 0.27, 0.95), 0.25, "pivot", "merged-ties")
    assert improved.endswith("+0.61 (90% interval +0.27 to +0.95) lies above the margin +0.25.")
    equivalent = gate_sentence(Outcome.equivalent, _diff(0.02, -0.1, 0.15), 0.25, "pivot", "aa")
    assert "equivalent" in equivalent and "lies within the margin ±0.25." in equivalent
    straddle = gate_sentence(Outcome.inconclusive, _diff(0.15, -0.1, 0.4), 0.25, "pivot", "c", questions_needed=320)
    assert "straddles the margin +0.25" in straddle and "about 320 questions (now 80)" in straddle
    below = gate_sentence(Outcome.inconclusive, _diff(-0.3, -0.5, -0.1), 0.25, "pivot", "c")
    assert below.endswith("straddles the margin \u22120.25.")
    wide = gate_sentence(Outcome.inconclusive, _diff(0.0, -0.5, 0.5), 0.25, "pivot", "c")
    assert "wider than the margin ±0.25 on both sides" in wide


def test_other_sentences():
    assert mde_sentence(0.4512, 80) == ("With 80 questions this suite can detect differences of about 0.45 points "
                                        "(80% power, 95% level).")
    assert "(90% power, 90% level)" in mde_sentence(0.3, 40, level=0.9, power=0.9)
    assert missing_sentence(3, 160).startswith("3 of 160 judgments (1.9%) were missing")
    assert "not counted as 0" in missing_sentence(3, 160)
    assert missing_sentence(1, 2000).startswith("1 of 2000 judgments (<0.1%) was missing")
    assert missing_sentence(0, 160) == "None of the 160 judgments is missing."
    with pytest.raises(ValueError):
        missing_sentence(5, 3)
    assert win_rate_sentence("a", "b", (0.62, 0.551, 0.69)) == \
        "a vs b: a wins 62% of pairwise judgments, ties counting half (95% interval 55% to 69%)."
    vc = VarianceComponents(omega2=0.7 * 80, sigma2_gen=0.2 * 80, sigma2_judge=0.1 * 80, K=1, J=1, C=80, balanced=True)
    assert variance_sentence(vc).startswith("Of the variance of the mean, 70% comes from question difficulty")
    assert "20% from generation" in variance_sentence(vc) and "10% from the judge" in variance_sentence(vc)


def test_no_significance_words_and_signs_match_the_numbers_over_a_grid():
    texts = []
    values = [-1.234, -0.25, -0.004, 0.0, 0.004, 0.1, 0.25, 2.5]
    for low, high in itertools.combinations(sorted(values), 2):
        for margin in (0.0, 0.1, 0.25, 1.0):
            e = _diff((low + high) / 2, low, high)
            outcome = gate(low, high, margin)
            for q in (None, 500):
                texts.append(gate_sentence(outcome, e, margin, "base", "cand", questions_needed=q))
            for signed in (True, False):
                text = fmt_estimate(e, signed=signed)
                texts.append(text)
                assert text.startswith(fmt_number(e.mean, 2, signed))
                assert f"interval {fmt_number(low, 2, signed)} to {fmt_number(high, 2, signed)})" in text
    texts += [mde_sentence(m, n) for m in (0.01, 0.45, 3.0) for n in (10, 80)]
    texts += [missing_sentence(k, 100) for k in (0, 1, 7, 100)]
    for text in texts:
        assert not FORBIDDEN.search(text), text
        assert not re.search(r"-\d", text), text  # negatives use U+2212, never a hyphen
        assert f"{MINUS}0.00" not in text and "+0.00" not in text
