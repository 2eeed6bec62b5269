"""Statistics with honest intervals: cluster bootstrap over questions, paired differences, gates.

    mean, lo, hi = mean_interval(scores, clusters)                       # 95% cluster bootstrap
    diff, lo, hi = paired_difference(candidate, baseline, clusters)      # paired on the same rows
    e = estimate(scores, clusters)                                       # + clustered SE and counts
    outcome, e = gate_difference(candidate, baseline, clusters, margin=0.25)
    rate, lo, hi = win_rate(["win", "tie", "loss"], [1, 2, 3])           # ties count half
    table = bradley_terry(model_a, model_b, verdicts, clusters)          # log-strengths with intervals
    vc = variance_components(scores, question, sample, repeat)           # which knob buys precision
    e = seed_estimate(diff, seed=seeds, question=qids)                   # a recipe over its training seeds

One module per kind of question: `bootstrap` (means and paired differences, missing rows),
`preference` (pairwise judgments), `power` (detectable effects, questions needed), `variance`
(variance components), `seeds` (recipes over training seeds and questions, ranking), `gate` (the
four-way decision against a margin).
"""

from harness.analysis.stats.bootstrap import (
    Estimate,
    Present,
    clustered_se,
    drop_missing,
    estimate,
    mean_interval,
    paired_difference,
    paired_estimate,
)
from harness.analysis.stats.gate import Outcome, gate, gate_difference
from harness.analysis.stats.power import mde, questions_for, questions_to_decide
from harness.analysis.stats.preference import bradley_terry, win_rate
from harness.analysis.stats.seeds import SeedEstimate, cells, prob_best, seed_estimate
from harness.analysis.stats.variance import VarianceComponents, variance_components

__all__ = ["Estimate", "Outcome", "Present", "SeedEstimate", "VarianceComponents", "bradley_terry", "cells",
           "clustered_se", "drop_missing", "estimate", "gate", "gate_difference", "mde", "mean_interval",
           "paired_difference", "paired_estimate", "prob_best", "questions_for", "questions_to_decide",
           "seed_estimate", "variance_components", "win_rate"]
