"""`fuseval eval / scores / pairwise / export / import-fastchat` as a user runs them, and kill -9 resume."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from harness.store import Store
from tests.harness.test_cli_generate import fuseval

LIMIT = 40  # zoo questions (2 turns each): 80 turns to grade per judge


def _count(db, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _kill_when(cmd, db, sql: str, total: int) -> bool:
    """Start cmd, SIGKILL it once `sql` counts some but not all of `total` rows; False if it finished first."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while p.poll() is None:
            if 0 < _count(db, sql) < total:
                p.send_signal(signal.SIGKILL)
                p.wait()
                return True
            time.sleep(0.02)
        pytest.fail(f"finished before it could be killed: {p.stderr.read()[-2000:]}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _rows(db, table: str, key: str) -> dict:
    with sqlite3.connect(db) as con:
        return {r[0]: r[1:] for r in con.execute(f"SELECT {key}, tstamp, run_id FROM {table}")}


@pytest.mark.timeout(900)
def test_eval_killed_in_generation_and_in_judging_resumes_without_loss_or_duplicates(world, judge_dir, tmp_path):
    db = tmp_path / "runs.db"
    cmd = [sys.executable, "-m", "harness.cli", "eval", str(world / "pivot"), "--bench", "zoo", "--limit", str(LIMIT),
           "--backend", "transformers", "--judge", "programmatic", "--judge", "llm", "--judge-model", str(judge_dir),
           "--judge-backend", "transformers", "--judge-max-new-tokens", "8", "--max-new-tokens", "24",
           "--chunk-size", "4", "--store", str(db)]
    _kill_when(cmd, db, "SELECT count(*) FROM answers", LIMIT)
    answers_1 = _rows(db, "answers", "akey")
    assert 0 < len(answers_1) < LIMIT and len(answers_1) % 4 == 0  # whole chunks only

    _kill_when(cmd, db, "SELECT count(*) FROM judgments WHERE judge LIKE 'llm/%'", 2 * LIMIT)
    answers_2, judgments_2 = _rows(db, "answers", "akey"), _rows(db, "judgments", "jkey")
    assert len(answers_2) == LIMIT and all(answers_2[k] == v for k, v in answers_1.items())  # nothing redone

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"0 questions answered, {LIMIT} already in the store" in r.stderr
    assert f"0 new judgments (0 unreadable, stored as missing), {2 * LIMIT} already" in r.stderr  # programmatic
    answers_3, judgments_3 = _rows(db, "answers", "akey"), _rows(db, "judgments", "jkey")
    assert answers_3 == answers_2 and all(judgments_3[k] == v for k, v in judgments_2.items())

    with sqlite3.connect(db) as con:
        per_judge = dict(con.execute("SELECT substr(judge, 1, 4), count(*) FROM judgments GROUP BY 1"))
        assert per_judge == {"prog": 2 * LIMIT, "llm/": 2 * LIMIT}  # every answer's two turns, once per judge
        dup = con.execute("SELECT count(*) FROM (SELECT akey, turn, judge, repeat FROM judgments "
                          "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1)").fetchone()[0]
        assert dup == 0
        runs = con.execute("SELECT status FROM runs ORDER BY started").fetchall()
        assert [s for (s,) in runs] == ["running", "running", "done"]  # the killed runs stay marked unfinished

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and _rows(db, "judgments", "jkey") == judgments_3  # a rerun does nothing
    assert f"0 new judgments (0 unreadable, stored as missing), {2 * LIMIT} already" in r.stderr


@pytest.mark.timeout(900)
def test_scores_pairwise_and_exports_through_the_cli(world, judge_dir, tmp_path):
    db = tmp_path / "s.db"
    for m in ("pivot", "source_numbers"):
        r = fuseval("eval", world / m, "--bench", "zoo", "--limit", "24", "--backend", "transformers",
                    "--max-new-tokens", "24", "--store", db)
        assert r.returncode == 0, r.stderr
        assert "scores by programmatic" in r.stdout and "95% interval" in r.stdout

    r = fuseval("scores", "--store", db, "--baseline", "pivot", "--overall")
    assert r.returncode == 0, r.stderr
    assert "difference from pivot" in r.stdout and "source_numbers" in r.stdout and "MDE" in r.stdout
    assert "significan" not in r.stdout.lower()

    # the same numbers as the statistics module computes directly from the stored judgments
    from harness.analysis import stats
    from harness.analysis.wording import fmt_interval

    df = Store(db).scores(bench="zoo")
    piv = df[df.model == "pivot"].sort_values(["question_id", "turn"])
    src = df[df.model == "source_numbers"].sort_values(["question_id", "turn"])
    e = stats.paired_estimate(src.score.to_numpy(float), piv.score.to_numpy(float),
                              piv.question_id.map(repr).to_numpy())
    assert fmt_interval(e.low, e.high, signed=True) in r.stdout

    r = fuseval("pairwise", "pivot", "source_numbers", "--store", db, "--limit", "3", "--judge-model", judge_dir,
                "--judge-backend", "transformers", "--judge-max-new-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert "win rate of A" in r.stdout and "6 new judgments" in r.stderr  # 3 questions x 2 turns, both orders each
    pairs = Store(db).pairs(bench="zoo")
    assert len(pairs) == 6 and pairs["winner"].isna().all()  # the tiny judge writes no verdict: missing, not a tie

    out = tmp_path / "fc"
    r = fuseval("export", out, "--store", db)
    assert r.returncode == 0, r.stderr
    assert (out / "zoo" / "question.jsonl").exists() and (out / "zoo" / "model_answer" / "pivot.jsonl").exists()
    db2 = tmp_path / "again.db"
    r = fuseval("import-fastchat", out, "--store", db2)
    assert r.returncode == 0, r.stderr
    assert "24 questions, 2 models, 48 new answers, 102 new judgments" in r.stderr  # 2 x 24 x 2 grades, 6 verdicts
    back = Store(db2).scores(bench="zoo")
    assert sorted(back.groupby("model").score.sum()) == sorted(df.groupby("model").score.sum())

    pq = tmp_path / "pq"
    r = fuseval("export", pq, "--format", "parquet", "--store", db)
    assert r.returncode == 0, r.stderr
    judgments = pd.read_parquet(pq / "judgments.parquet")
    assert len(judgments) == 2 * 2 * 24 + 6


def test_bad_input_is_one_line(world, tmp_path):
    r = fuseval("scores", "--store", tmp_path / "none.db")
    assert r.returncode == 1 and "no store yet" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = fuseval("eval", world / "pivot", "--judge", "llm", "--store", tmp_path / "s.db")
    assert r.returncode == 1 and "--judge-model" in r.stderr and "Traceback" not in r.stderr
    r = fuseval("eval", world / "pivot", "--judge", "vibes", "--store", tmp_path / "s.db")
    assert r.returncode == 1 and "vibes" in r.stderr
    qs = tmp_path / "dup" / "question.jsonl"
    qs.parent.mkdir()
    line = json.dumps({"question_id": 1, "category": "writing", "turns": ["hi"]})
    qs.write_text(line + "\n" + line + "\n")
    r = fuseval("eval", world / "pivot", "--bench", qs, "--store", tmp_path / "s.db", "--judge", "programmatic")
    assert r.returncode == 1 and f"{qs}: question_id 1 appears twice" in r.stderr
    Store(tmp_path / "s.db").close()
    r = fuseval("scores", "--store", tmp_path / "s.db", "--baseline", "nobody")
    assert r.returncode == 1 and "nobody" in r.stderr and "Traceback" not in r.stderr
    r = fuseval("no-such-command")
    assert r.returncode == 2 and "No such command" in r.stderr and "Traceback" not in r.stderr
