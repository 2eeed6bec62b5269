"""Scores out of the store, with intervals: per model and category, paired differences, win rates.

    scores = score_table(store.scores(bench="zoo"))                    # a DataFrame, one row per model x category
    diffs = difference_table(store.scores(bench="zoo"), baseline="pivot")
    print_scores(console, store, "zoo", baseline="pivot")              # the same, as tables

Missing judgments (unreadable verdicts) are dropped before any statistic and counted in `missing`;
a paired difference uses only rows judged for both models (same question, turn, sample, repeat).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import stats
from harness.analysis.wording import fmt_interval, fmt_level, fmt_number, missing_sentence

PAIR_KEY = ["question_id", "turn", "sample", "repeat"]
ALL = "all"


def _cats(df: pd.DataFrame, by_category: bool):
    yield ALL, df
    if by_category:
        yield from df.groupby("category", sort=True)


def _qkey(df: pd.DataFrame) -> np.ndarray:
    return df["question_id"].map(repr).to_numpy()


def score_table(df: pd.DataFrame, level: float = 0.95, n_boot: int = 10_000, seed: int = 0,
                by_category: bool = True) -> pd.DataFrame:
    """Mean score with its cluster-bootstrap interval and clustered SE per judge, model and category."""
    rows = []
    for (judge, model), part in df.groupby(["judge", "model"], sort=True):
        for cat, sub in _cats(part, by_category):
            ok = sub[sub["score"].notna()]
            row = {"judge": judge, "model": model, "category": cat, "rows": len(ok),
                   "questions": ok["question_id"].map(repr).nunique(), "missing": int(sub["score"].isna().sum())}
            if len(ok):
                e = stats.estimate(ok["score"].to_numpy(float), _qkey(ok), level=level, n_boot=n_boot, seed=seed)
                row |= {"mean": e.mean, "low": e.low, "high": e.high, "se": e.se}
            rows.append(row)
    return pd.DataFrame(rows, columns=["judge", "model", "category", "mean", "low", "high", "se", "questions",
                                       "rows", "missing"])


def paired_rows(df: pd.DataFrame, judge: str, model: str, baseline: str) -> pd.DataFrame:
    """Rows judged for both: candidate score `score`, baseline score `score_base`, aligned on PAIR_KEY."""
    j = df[df["judge"] == judge]
    cand = j[j["model"] == model][PAIR_KEY + ["category", "score"]]
    base = j[j["model"] == baseline][PAIR_KEY + ["score"]].rename(columns={"score": "score_base"})
    return cand.merge(base, on=PAIR_KEY, how="inner")


def difference_table(df: pd.DataFrame, baseline: str, level: float = 0.95, n_boot: int = 10_000, seed: int = 0,
                     by_category: bool = True, power: float = 0.8) -> pd.DataFrame:
    """Candidate minus baseline on shared rows, per judge, model and category, with the MDE of that comparison."""
    rows = []
    for judge in sorted(df["judge"].unique()):
        for model in sorted(df[(df["judge"] == judge) & (df["model"] != baseline)]["model"].unique()):
            both = paired_rows(df, judge, model, baseline)
            for cat, sub in _cats(both, by_category):
                present = sub[sub["score"].notna() & sub["score_base"].notna()]
                row = {"judge": judge, "model": model, "baseline": baseline, "category": cat,
                       "questions": present["question_id"].map(repr).nunique(), "rows": len(present),
                       "missing": len(sub) - len(present)}
                if len(present):
                    c, b, q = present["score"].to_numpy(float), present["score_base"].to_numpy(float), _qkey(present)
                    e = stats.paired_estimate(c, b, q, level=level, n_boot=n_boot, seed=seed)
                    row |= {"diff": e.mean, "low": e.low, "high": e.high, "se": e.se,
                            "mde": stats.mde(c - b, q, power=power, level=level) if row["questions"] > 1 else np.nan}
                rows.append(row)
    return pd.DataFrame(rows, columns=["judge", "model", "baseline", "category", "diff", "low", "high", "se", "mde",
                                       "questions", "rows", "missing"])


def win_table(pairs: pd.DataFrame, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Per judge and pair of models: model_a's win rate against model_b (ties half) with its interval."""
    rows = []
    for (judge, a, b), part in pairs.groupby(["judge", "model_a", "model_b"], sort=True):
        ok = part[part["winner"].notna()]
        row = {"judge": judge, "model_a": a, "model_b": b, "comparisons": len(ok),
               "missing": len(part) - len(ok), "wins_a": int((ok["winner"] == "A").sum()),
               "ties": int((ok["winner"] == "tie").sum()), "wins_b": int((ok["winner"] == "B").sum())}
        if "flipped" in part:  # both orders judged: how often swapping the answers' places changed the verdict
            both = part["flipped"].dropna()
            row["order_flips"], row["order_judged"] = int(both.sum()), len(both)
        if len(ok):
            outcome = ok["winner"].map({"A": 1.0, "tie": 0.5, "B": 0.0}).to_numpy()
            row["rate"], row["low"], row["high"] = stats.win_rate(outcome, _qkey(ok), level=level, n_boot=n_boot,
                                                                  seed=seed)
        rows.append(row)
    return pd.DataFrame(rows, columns=["judge", "model_a", "model_b", "rate", "low", "high", "wins_a", "ties",
                                       "wins_b", "comparisons", "missing", "order_flips", "order_judged"])


def print_scores(console, store, bench: str, models: list[str] | None = None, baseline: str | None = None,
                 judge: str | None = None, level: float = 0.95, n_boot: int = 10_000, by_category: bool = True) -> None:
    """The score tables of a bench (and differences against `baseline`) on a rich console."""
    from rich.table import Table  # noqa: PLC0415

    df = store.scores(bench=bench)
    if judge:
        df = df[df["judge"].str.contains(judge, regex=False)]
    if models:
        keep = set(models) | ({baseline} if baseline else set())
        df = df[df["model"].isin(keep)]
    if df.empty:
        console.print(f"no judgments for bench {bench!r} in {store.path}")
        return
    table = score_table(df, level=level, n_boot=n_boot, by_category=by_category)
    for judge_id, part in table.groupby("judge", sort=True):
        t = Table(title=f"{bench}: scores by {judge_id}", title_justify="left")
        for col in ("model", "category", "mean", f"{fmt_level(level)} interval", "SE", "questions", "missing"):
            t.add_column(col, justify="left" if col in ("model", "category") else "right")
        for r in part.itertuples():
            t.add_row(r.model, r.category, fmt_number(r.mean), fmt_interval(r.low, r.high) if r.rows else "none",
                      fmt_number(r.se), str(r.questions), str(r.missing))
        console.print(t)
        total, missing = int(part[part.category == ALL]["rows"].sum()), int(part[part.category == ALL]["missing"].sum())
        if missing:
            console.print(missing_sentence(missing, total + missing))
    if baseline:
        diffs = difference_table(df, baseline, level=level, n_boot=n_boot, by_category=by_category)
        for judge_id, part in diffs.groupby("judge", sort=True):
            t = Table(title=f"{bench}: difference from {baseline} ({judge_id}), paired on the same questions",
                      title_justify="left")
            for col in ("model", "category", "difference", f"{fmt_level(level)} interval", "MDE", "questions",
                        "missing"):
                t.add_column(col, justify="left" if col in ("model", "category") else "right")
            for r in part.itertuples():
                t.add_row(r.model, r.category, fmt_number(r.diff, signed=True),
                          fmt_interval(r.low, r.high, signed=True) if r.rows else "none", fmt_number(r.mde),
                          str(r.questions), str(r.missing))
            console.print(t)
            console.print("MDE: the smallest difference these questions would detect with 80% power, from the "
                          "observed paired spread.")


def print_wins(console, pairs: pd.DataFrame, level: float = 0.95, n_boot: int = 10_000) -> None:
    """Win rates per pair and, for three or more models, Bradley-Terry strengths."""
    from rich.table import Table  # noqa: PLC0415

    if pairs.empty:
        console.print("no pairwise judgments")
        return
    wins = win_table(pairs, level=level, n_boot=n_boot)
    t = Table(title="pairwise: A's win rate against B (ties count half), both orders judged", title_justify="left")
    for col in ("A", "B", "win rate of A", f"{fmt_level(level)} interval", "A / tie / B", "missing",
                "order flips"):
        t.add_column(col, justify="left" if col in ("A", "B") else "right")
    for r in wins.itertuples():
        flips = (f"{int(r.order_flips)} of {int(r.order_judged)} ({r.order_flips / r.order_judged:.0%})"
                 if r.order_judged == r.order_judged and r.order_judged else "none")  # NaN-safe: frames without it
        t.add_row(r.model_a, r.model_b, fmt_number(r.rate), fmt_interval(r.low, r.high) if r.comparisons else "none",
                  f"{r.wins_a} / {r.ties} / {r.wins_b}", str(r.missing), flips)
    console.print(t)
    ok = pairs[pairs["winner"].notna()]
    if len(set(ok["model_a"]) | set(ok["model_b"])) >= 3:
        bt = stats.bradley_terry(ok["model_a"].to_numpy(), ok["model_b"].to_numpy(), ok["winner"].to_numpy(),
                                 clusters=_qkey(ok), level=level)
        t = Table(title="Bradley-Terry strengths (log scale, mean 0)", title_justify="left")
        for col in ("model", "strength", f"{fmt_level(level)} interval", "comparisons"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for model, r in bt.iterrows():
            t.add_row(str(model), fmt_number(r.strength, signed=True), fmt_interval(r.low, r.high, signed=True),
                      str(r.games))
        console.print(t)
