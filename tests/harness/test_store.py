"""The SQLite store: content keys, idempotent writes, kill -9 safety, concurrent writers, exports."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from fusion.common.errors import FusevalError
from harness.formats.questions import Question
from harness.store import AnswerRow, JudgmentRow, Store, question_key


def _model_dir(root, payload=b"weights"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.safetensors").write_bytes(payload)
    (root / "config.json").write_text('{"model_type": "llama"}')
    return root


def _questions():
    return [Question(question_id=1, category="math", turns=["1+1?", "Times 3?"], reference=["2", "6"]),
            Question(question_id=2, category="writing", turns=["A haiku."])]


def test_models_are_keyed_by_content_not_path(tmp_path):
    store = Store(tmp_path / "s.db")
    a = store.add_model("a", path=_model_dir(tmp_path / "a"))
    b = store.add_model("b", path=_model_dir(tmp_path / "b"))  # same bytes elsewhere
    c = store.add_model("c", path=_model_dir(tmp_path / "c", b"weightz"))
    assert a == b != c
    assert store.add_model("endpoint-x") == store.add_model("endpoint-x") != store.add_model("endpoint-y")
    assert store.model_by_name("c") == c
    with pytest.raises(FusevalError, match="no model named 'zz'"):
        store.model_by_name("zz")
    with pytest.raises(FusevalError, match="no weight files"):
        store.model_hash(tmp_path)


def test_file_hash_cache_notices_a_changed_file(tmp_path):
    store = Store(tmp_path / "s.db")
    d = _model_dir(tmp_path / "m")
    h1 = store.model_hash(d)
    time.sleep(0.01)
    (d / "model.safetensors").write_bytes(b"other weights")
    assert store.model_hash(d) != h1
    assert store.db.execute("SELECT COUNT(*) FROM file_hashes").fetchone()[0] == 2  # config + weights


def test_writes_are_idempotent_and_missing_stays_missing(tmp_path):
    store = Store(tmp_path / "s.db")
    m = store.add_model("m")
    qk = store.add_questions("set", _questions())
    assert qk[1] == question_key("math", ["1+1?", "Times 3?"])
    rows = [AnswerRow(m, qk[1], 0, "g", ["2", "6"]), AnswerRow(m, qk[2], 0, "g", ["Leaves fall"])]
    assert store.add_answers(rows) == 2
    assert store.add_answers(rows) == 0
    assert store.answered(m, "g") == {(qk[1], 0), (qk[2], 0)}
    js = [JudgmentRow("single", "j", "v1", rows[0].akey, 1, score=9.0),
          JudgmentRow("single", "j", "v1", rows[0].akey, 2, score=None, detail={"judgment": "??"})]
    assert store.add_judgments(js) == 2
    assert store.add_judgments(js) == 0
    df = store.scores(bench="set")
    assert len(df) == 2 and df["score"].isna().sum() == 1  # missing is NULL, not 0
    assert set(df["question_id"]) == {1}
    assert store.judged([j.jkey for j in js] + ["nope"]) == {j.jkey for j in js}


def test_a_changed_question_replaces_the_old_one_under_its_id(tmp_path):
    store = Store(tmp_path / "s.db")
    store.add_questions("set", _questions())
    fixed = Question(question_id=1, category="math", turns=["1+1?", "Times 3?"], reference=["2", "six"])
    store.add_questions("set", [fixed])
    refs = store.db.execute("SELECT reference, ref_version FROM bench_questions WHERE bench='set' "
                            "AND question_id='1'").fetchall()
    assert len(refs) == 1 and json.loads(refs[0][0]) == ["2", "six"]


def test_runs_record_environment_and_end(tmp_path):
    store = Store(tmp_path / "s.db")
    run = store.start_run("suite.yml", {"x": 1})
    store.end_run(run)
    df = store.frame("runs")
    assert df.loc[0, "status"] == "done" and df.loc[0, "ended"] >= df.loc[0, "started"]
    assert "python" in json.loads(df.loc[0, "environment"])


def test_parquet_export_round_trips(tmp_path):
    store = Store(tmp_path / "s.db")
    m = store.add_model("m")
    qk = store.add_questions("set", _questions())
    store.add_answers([AnswerRow(m, qk[2], 0, "g", ["Leaves fall"])])
    paths = store.to_parquet(tmp_path / "pq")
    answers = pd.read_parquet(tmp_path / "pq" / "answers.parquet")
    assert {p.stem for p in paths} == {"models", "questions", "bench_questions", "answers", "judgments", "runs",
                                       "metrics", "results"}
    assert json.loads(answers.loc[0, "turns"]) == ["Leaves fall"]


def test_bad_store_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(FusevalError, match="bad.db: not a usable fuseval store"):
        Store(bad)
    newer = tmp_path / "newer.db"
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version=99")
    con.close()
    with pytest.raises(FusevalError, match="newer than this fuseval"):
        Store(newer)


_WRITER = textwrap.dedent("""
    import sys
    from harness.formats.questions import Question
    from harness.store import AnswerRow, Store
    store = Store(sys.argv[1])
    m = store.add_model("m")
    q = store.add_questions("set", [Question(question_id=1, category="c", turns=["hi"])])[1]
    tag, batches = sys.argv[2], int(sys.argv[3])
    for b in range(batches):
        store.add_answers([AnswerRow(m, q, i, f"{tag}-{b}", ["x" * 200]) for i in range(50)])
    print("done", flush=True)
""")


def test_concurrent_writers_do_not_corrupt_or_lose_rows(tmp_path):
    db = tmp_path / "s.db"
    Store(db).close()
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(db), tag, "40"], stdout=subprocess.PIPE)
             for tag in ("p", "q")]
    for p in procs:
        assert p.wait(timeout=120) == 0
    store = Store(db)
    assert store.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 2 * 40 * 50
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_kill_9_mid_write_leaves_whole_batches_only(tmp_path):
    db = tmp_path / "s.db"
    Store(db).close()
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), "k", "100000"], stdout=subprocess.PIPE,
                         env={**os.environ})
    time.sleep(3.0)  # let it write for a while
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    store = Store(db)
    n = store.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert n > 0 and n % 50 == 0  # every batch landed whole or not at all
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
