"""The run store read out as pandas DataFrames: whole tables, judged turns, pairwise verdicts, history.

    df = store.scores(bench="zoo")          # one row per judged turn, joined to model and question
    store.to_parquet("out/tables")          # every table as <table>.parquet

`StoreFrames` is a mixin: `harness.store.Store` inherits it, so these are methods of every store.
pandas is imported only when a frame is asked for.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from fusion.common.errors import FusevalError
from harness.store.schema import TABLES


def _order_flip(detail: str | None) -> bool | None:
    """From a pair judgment's detail: did the verdict change when the answers swapped places?"""
    d = json.loads(detail) if detail else {}
    g1, g2 = d.get("g1_winner"), d.get("g2_winner")
    return None if g1 is None or g2 is None else g1 != g2


class StoreFrames:
    """The reading side of `Store`: queries that return DataFrames (needs `self.db`)."""

    db: sqlite3.Connection

    def history(self, suite: str | None = None):
        """Every finished run's results with the run's start time, oldest first."""
        import pandas as pd  # noqa: PLC0415

        sql = ("SELECT r.run_id, u.started, r.suite, r.model, r.bench, r.judge, r.mean, r.low, r.high, r.questions "
               "FROM results r JOIN runs u ON u.id=r.run_id WHERE u.status='done'")
        args = []
        if suite is not None:
            sql += " AND r.suite=?"
            args.append(suite)
        return pd.read_sql_query(sql + " ORDER BY u.started", self.db, params=args)

    def frame(self, table: str):
        """A whole table as a pandas DataFrame."""
        import pandas as pd  # noqa: PLC0415

        if table not in TABLES:
            raise FusevalError(f"unknown table {table!r}; choose from {', '.join(TABLES)}")
        return pd.read_sql_query(f"SELECT * FROM {table}", self.db)

    def _judgment_frame(self, sql: str, bench: str | None, judge: str | None):
        """Rows of a judgments query, filtered by bench and judge; question ids decoded."""
        import pandas as pd  # noqa: PLC0415

        args: list = []
        for column, value in (("b.bench", bench), ("j.judge", judge)):
            if value is not None:
                sql += f" AND {column}=?"
                args.append(value)
        df = pd.read_sql_query(sql, self.db, params=args)
        df["question_id"] = df["question_id"].map(json.loads)
        return df

    def scores(self, bench: str | None = None, judge: str | None = None):
        """Single-answer judgments joined to model, question and answer: one row per judged turn."""
        return self._judgment_frame(
            "SELECT m.name AS model, a.model_hash, b.bench, b.question_id, q.category, j.turn, a.sample, j.repeat, "
            "j.judge, j.prompt_version, j.score, a.gen_key, j.akey, j.jkey FROM judgments j "
            "JOIN answers a ON j.akey=a.akey JOIN models m ON a.model_hash=m.hash "
            "JOIN questions q ON a.qkey=q.qkey JOIN bench_questions b ON b.qkey=a.qkey WHERE j.kind='single'",
            bench, judge)

    def pairs(self, bench: str | None = None, judge: str | None = None):
        """Pairwise judgments: one row per judged turn, model_a/model_b and winner ('A', 'B', 'tie' or None);
        `flipped`: whether the two orders' verdicts differed (the judge's position bias), None if either is missing."""
        df = self._judgment_frame(
            "SELECT ma.name AS model_a, mb.name AS model_b, b.bench, b.question_id, q.category, j.turn, "
            "aa.sample, j.repeat, j.judge, j.prompt_version, j.winner, j.jkey, j.detail FROM judgments j "
            "JOIN answers aa ON j.akey=aa.akey JOIN answers ab ON j.akey_b=ab.akey "
            "JOIN models ma ON aa.model_hash=ma.hash JOIN models mb ON ab.model_hash=mb.hash "
            "JOIN questions q ON aa.qkey=q.qkey JOIN bench_questions b ON b.qkey=aa.qkey WHERE j.kind='pair'",
            bench, judge)
        df["winner"] = df["winner"].astype(object).where(df["winner"].notna(), None)  # missing stays None
        df["flipped"] = [_order_flip(d) for d in df.pop("detail")]
        return df

    def to_parquet(self, out_dir: str | os.PathLike) -> list[Path]:
        """Every table as `<table>.parquet` in out_dir (written atomically)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for t in TABLES:
            path = out / f"{t}.parquet"
            tmp = out / f".{t}.parquet.tmp"
            self.frame(t).to_parquet(tmp, index=False)
            os.replace(tmp, path)
            written.append(path)
        return written
