"""Score tables out of stored judgments agree with the statistics run by hand, and count what is missing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import stats
from harness.analysis.summary import ALL, difference_table, score_table, win_table


def _frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(30):
        cat = "math" if q < 12 else "writing"
        ease = rng.normal(0, 1.5)
        for turn in (1, 2):
            for model, shift in (("base", 0.0), ("cand", 0.6)):
                score = float(np.clip(np.round(5 + ease + shift + rng.normal(0, 1)), 1, 10))
                rows.append({"judge": "j", "model": model, "question_id": q, "turn": turn, "sample": 0,
                             "repeat": 0, "category": cat, "score": score})
    df = pd.DataFrame(rows)
    df.loc[(df.model == "cand") & (df.question_id == 3) & (df.turn == 2), "score"] = np.nan  # one unreadable
    return df


def test_score_table_matches_direct_estimates_and_counts_missing():
    df = _frame()
    table = score_table(df, n_boot=2000).set_index(["model", "category"])
    for (model, cat), part in [(("cand", ALL), df[df.model == "cand"]),
                               (("base", "math"), df[(df.model == "base") & (df.category == "math")])]:
        ok = part[part.score.notna()]
        e = stats.estimate(ok.score.to_numpy(), ok.question_id.map(repr).to_numpy(), n_boot=2000)
        row = table.loc[(model, cat)]
        assert np.allclose([row["mean"], row.low, row.high, row.se], [e.mean, e.low, e.high, e.se])
        assert row.missing == part.score.isna().sum() and row.questions == ok.question_id.nunique()
    assert table.loc[("cand", ALL)].missing == 1 and table.loc[("cand", ALL)].rows == 59


def test_difference_table_pairs_rows_and_drops_a_missing_side():
    df = _frame()
    diffs = difference_table(df, "base", n_boot=2000).set_index("category")
    cand = df[df.model == "cand"].set_index(["question_id", "turn"]).score
    base = df[df.model == "base"].set_index(["question_id", "turn"]).score
    both = pd.DataFrame({"c": cand, "b": base}).dropna().reset_index()
    q = both.question_id.map(repr).to_numpy()
    e = stats.paired_estimate(both.c.to_numpy(), both.b.to_numpy(), q, n_boot=2000)
    row = diffs.loc[ALL]
    assert np.allclose([row["diff"], row.low, row.high], [e.mean, e.low, e.high])
    assert (row.rows, row.missing, row.questions) == (59, 1, 30)
    assert np.isclose(row.mde, stats.mde(both.c.to_numpy() - both.b.to_numpy(), q))
    assert 0.2 < row["diff"] < 1.0 and row.low < row["diff"] < row.high


def test_win_table_counts_ties_half_and_missing_apart():
    pairs = pd.DataFrame({"judge": "j", "model_a": "x", "model_b": "y", "question_id": [1, 1, 2, 2, 3, 4],
                          "turn": [1, 2, 1, 2, 1, 1], "winner": ["A", "A", "tie", "B", None, "A"]})
    (row,) = win_table(pairs, n_boot=2000).itertuples()
    assert (row.wins_a, row.ties, row.wins_b, row.missing, row.comparisons) == (3, 1, 1, 1, 5)
    assert np.isclose(row.rate, 3.5 / 5) and row.low <= row.rate <= row.high
