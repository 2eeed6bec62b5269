"""What a report is made of: plain tables and values handed over by the runner.

`reports` imports neither `harness` nor `fusion` (DESIGN.md section 1): the runner computes every
number (means, intervals, differences, gate outcomes) and passes them here; the report only lays
them out. Every DataFrame's columns are listed below; an empty DataFrame means "nothing of this
kind in this run" and its section is left out (said so in one line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

SCORE_COLUMNS = ["bench", "judge", "model", "category", "mean", "low", "high", "se", "questions", "rows", "missing"]
DIFF_COLUMNS = ["bench", "judge", "model", "baseline", "category", "diff", "low", "high", "se", "mde", "questions",
                "rows", "missing"]
SEED_COLUMNS = ["group", "seed", "model", "bench", "judge", "baseline", "diff", "low", "high"]
# a recipe over its seeds: the seeds-combined difference (diff, low, high) and the between-seed SD (sd, sd_low, sd_high)
SEED_SUMMARY_COLUMNS = ["group", "bench", "judge", "baseline", "seeds", "diff", "low", "high", "sd", "sd_low",
                        "sd_high"]
HISTORY_COLUMNS = ["run_id", "started", "model", "bench", "judge", "mean", "low", "high"]
# low/high: the 95% interval; interval: how it was computed (a bootstrap over documents, or value ± 1.96·stderr)
# per bench x judge x model with samples or judge repeats: the variance parts (question omega2, generation,
# judge) with 95% intervals, and the interval half-width now and with twice the questions, samples, repeats
NOISE_COLUMNS = ["bench", "judge", "model", "questions", "samples", "repeats", "omega2", "sigma2_gen",
                 "sigma2_judge", "omega2_low", "sigma2_gen_low", "sigma2_judge_low", "omega2_high",
                 "sigma2_gen_high", "sigma2_judge_high", "half_now", "half_questions", "half_samples",
                 "half_repeats"]
METRIC_COLUMNS = ["model", "task", "metric", "value", "stderr", "low", "high", "interval"]
ALL = "all"  # the category value of a row that pools every category


@dataclass
class Gate:
    """One gate decision: candidate − baseline against ±margin, on the interval at `level`."""

    candidate: str
    baseline: str
    bench: str
    judge: str
    outcome: str          # improved | equivalent | regressed | inconclusive
    diff: float
    low: float
    high: float
    margin: float
    level: float          # e.g. 0.90
    sentence: str         # the one-sentence outcome, already worded (harness.analysis.wording.gate_sentence)
    seeds: int = 1        # training seeds combined in the interval (a recipe's gate); 1: one model's gate


@dataclass
class Example:
    """One question with every model's answer, for the side-by-side section (raw model text: escape it)."""

    bench: str
    question_id: Any
    category: str
    turns: list[str]
    answers: dict[str, list[str]]                                  # model -> answer per turn
    scores: dict[str, list[float | None]] = field(default_factory=dict)  # model -> score per turn, if judged


@dataclass
class Verdict:
    """One recipe, its training seeds combined, against one baseline: the difference, its interval, the outcome."""

    recipe: str
    baseline: str
    diff: float
    low: float
    high: float
    level: float
    seeds: int
    questions: int
    outcome: str | None = None  # improved | equivalent | regressed | inconclusive, against ±margin; None: no margin
    caveat: str | None = None   # e.g. few seeds that vary more than the question noise


@dataclass
class Ranked:
    """A recipe's mean score over its seeds with its interval, and how often it came out best under resampling."""

    recipe: str
    mean: float
    low: float
    high: float
    p_best: float
    seeds: int


@dataclass
class Decision:
    """The report's first screen: per recipe, seeds combined, the verdicts, a ranking and the one answer."""

    bench: str
    judge: str
    level: float                   # of the verdicts' intervals (the gate's level)
    margin: float | None           # the practical margin; None: no gate in the suite (no outcomes)
    gate_baseline: str | None      # the suite's gate baseline (a recipe name)
    baselines: list[str]           # the baselines compared, control first where there is one
    verdicts: list[Verdict]        # recipe x baseline
    ranking: list[Ranked]          # best first
    answer: str                    # one plain sentence: did the teachers help beyond gold-label training?
    method: str                    # one line: how seeds and questions enter the intervals


@dataclass
class ReportData:
    """Everything one run's report shows. All intervals are at `level` (0.95) unless a row says otherwise."""

    title: str
    run: dict[str, Any]                     # id, suite, started/ended (epoch s), git_sha, backend, workspace, ...
    scores: pd.DataFrame                    # SCORE_COLUMNS: per bench x judge x model x category (+ "all")
    diffs: pd.DataFrame                     # DIFF_COLUMNS: candidate − baseline, paired on shared questions
    gates: list[Gate] = field(default_factory=list)
    seeds: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SEED_COLUMNS))
    seed_summary: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SEED_SUMMARY_COLUMNS))
    # ablation grids: grid name -> DataFrame with one column per axis plus model, bench, judge, baseline,
    # diff, low, high (overall category only)
    ablations: dict[str, pd.DataFrame] = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=HISTORY_COLUMNS))
    # merge diagnostics: model -> {"inputs": [input names], "weights": {tensor name: [weight per input]}}
    merge_weights: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=METRIC_COLUMNS))  # lm-eval
    examples: list[Example] = field(default_factory=list)
    judge_notes: dict[str, str] = field(default_factory=dict)   # judge id -> caveat shown with its scores
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> {role, path, recipe, backend}
    level: float = 0.95
    decision: Decision | None = None
    # "How these numbers were computed": (label, text) facts: clusters, resamples, levels, seeds, judges,
    # generation settings, versions, chat-template hashes, git sha
    method: list[tuple[str, str]] = field(default_factory=list)
    empty_benches: list[str] = field(default_factory=list)  # one line each: a bench whose judge gave no grades
    noise: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=NOISE_COLUMNS))
