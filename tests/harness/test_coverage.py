"""Interval coverage, simulated (benchmarks/validity/coverage.py runs the full table on demand).

Seeded simulations, so the numbers are fixed; the bounds leave room for their Monte-Carlo error.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "validity" / "coverage.py"


@pytest.fixture(scope="module")
def coverage():
    spec = importlib.util.spec_from_file_location("coverage_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("shape", "questions"), [("mt-bench", 10), ("zoo", 20)])
def test_the_expanded_interval_covers_where_the_plain_percentile_falls_short(coverage, shape, questions):
    """One MT-Bench category (10 questions) and one zoo domain (20): the interval the report prints covers
    at least 0.93 (400 comparisons: Monte-Carlo SE about 0.012), the plain percentile interval less."""
    res = coverage.paired_coverage(shape, questions, sims=400, n_boot=1000)
    expanded, plain = res["expanded"][0] / 400, res["percentile"][0] / 400
    assert expanded >= 0.925 and plain < expanded
    assert res["expanded"][1] > res["percentile"][1]  # by being wider


def test_the_seeds_and_questions_interval_covers_when_seeds_vary_less_than_the_questions(coverage):
    hits, _, _ = coverage.seed_coverage(3, 100, sims=300, seed_sd=0.02)
    assert hits / 300 >= 0.93
