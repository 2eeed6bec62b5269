"""Endpoints that fail mid-run: a judge that errs, times out, babbles or floods; a vLLM server that dies
or hangs. The run retries what is transient, stores unreadable verdicts as missing (never 0), fails
clearly on what is not, and a rerun completes with nothing lost or repeated."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest
import yaml

from fusion.common.errors import FusevalError
from tests.faults.conftest import KEY_ENV, TALLY, fuseval, integrity, stub_suite

STUB = [sys.executable, str(Path(__file__).resolve().parents[1] / "harness" / "stub_openai.py")]

CHAT_FAULTS = ["ok", "flaky:2", "flaky:8", "timeout-once:3", "garbage", "huge", "huge-rating", "badjson:2",
               "status:500", "ok"]
#   flaky:2, timeout-once, badjson:2: recovered by retries within the run;
#   flaky:8: fails every attempt of the first run (2 models x 3 attempts), succeeds in the second;
#   status:500: fails until the endpoint is fixed (here: the stub is told to stop failing);
#   garbage, huge: unreadable, asked once more, then stored as missing; huge-rating: a verdict after 1 MB.


def _judgments(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT q.turns, j.turn, j.score, length(j.detail) FROM judgments j "
                           "JOIN answers a ON a.akey = j.akey JOIN questions q ON q.qkey = a.qkey "
                           "WHERE j.judge LIKE 'llm/stub-judge%'").fetchall()


@pytest.mark.timeout(600)
def test_a_failing_judge_endpoint_loses_nothing_and_unreadable_verdicts_are_missing(stub, tmp_path):
    url, state = stub
    suite = stub_suite(tmp_path, url, CHAT_FAULTS, judge_options={"timeout_s": 1.5})
    args = ("run", suite, "--workspace", tmp_path / "ws", "--store", tmp_path / "runs.db")

    r = fuseval(*args, env=KEY_ENV)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    err = r.stderr.strip().splitlines()[-1]
    assert "judgments could not be asked (the judge failed); run the suite again to retry them" in err
    TALLY["injected"] += len(CHAT_FAULTS) - 2

    r = fuseval(*args, env=KEY_ENV)  # flaky:8 comes through now; status:500 still fails
    assert r.returncode == 1, r.stderr[-3000:]
    state.fixed = True  # the endpoint is repaired: status:500 prompts get verdicts from now on
    r = fuseval(*args, env=KEY_ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    TALLY["recovered"] += 1

    rows = _judgments(tmp_path / "runs.db")
    integrity(tmp_path / "runs.db")
    assert len(rows) == 2 * len(CHAT_FAULTS) * 2  # 2 models x questions x 2 turns, each judged once
    by_fault: dict[str, list] = {}
    for turns, _turn, score, size in rows:
        fault = m.group(1).rstrip('",]') if (m := re.search(r"JUDGE=(\S+)", turns)) else "ok"
        by_fault.setdefault(fault, []).append((score, size))
    for fault, got in by_fault.items():
        scores = [s for s, _ in got]
        if fault in ("garbage", "huge"):
            assert scores == [None] * len(got), fault  # missing, never 0
        else:
            assert all(s is not None and 1 <= s <= 10 for s in scores), (fault, scores)
    assert max(size for _, size in by_fault["huge"]) < 200_000  # a flood is cut before it is stored


def _vllm_suite(tmp_path: Path, tiny_set, first_turn: str, options: dict) -> Path:
    q = tmp_path / "q" / "question.jsonl"
    q.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"question_id": k, "category": "math", "turns": [f"Repeat the number {k}."],
             "checks": [{"type": "numeric", "answer": k}]} for k in range(1, 9)]
    rows[3]["turns"] = [first_turn]
    rows[3]["checks"] = [{"type": "regex", "pattern": "now", "must_match": True}]
    q.write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = {"name": "server-faults", "baselines": [{"name": "base", "model": str(tiny_set["base"])}],
             "candidates": [{"name": "variant", "model": str(tiny_set["variant1"])}],
             "benchmarks": [{"questions": str(q), "name": "numbers"}],
             "backend": {"kind": "vllm", "options": {"startup_timeout_s": 60, **options}}}
    p = tmp_path / "suite.yml"
    p.write_text(yaml.safe_dump(suite, sort_keys=False))
    return p


@pytest.fixture
def stub_vllm(monkeypatch):
    """Serve `vllm` models with the stub server (started, restarted and stopped by the real lifecycle code)."""
    import harness.backends as hb

    flags: list[str] = []
    real = hb.make_backend

    def make(kind, model, options=None, **kw):
        b = real(kind, model, options, **kw)
        if kind == "vllm":
            b.server._command = [*STUB, *flags]
        return b

    monkeypatch.setattr(hb, "make_backend", make)
    return flags


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["die", "hang"])
def test_a_vllm_server_that_dies_or_hangs_mid_run_is_restarted_once(tiny_set, tmp_path, stub_vllm, fault):
    from harness.run.runner import run_suite
    from harness.run.suite import load_suite
    from harness.store import Store

    suite = _vllm_suite(tmp_path, tiny_set, f"{fault} now", {"request_timeout_s": 2})
    db = tmp_path / "runs.db"
    with Store(db) as store, pytest.raises(FusevalError, match=rf"{'died' if fault == 'die' else 'hung'} again "
                                                                r"after a restart; log .*stub serving on"):
        run_suite(load_suite(suite), tmp_path / "ws", store)  # fails every time: the log tail says why
    TALLY["injected"] += 2

    stub_vllm += ["--die-flag", str(tmp_path / "once")]  # now it fails once only: the restart carries the run
    with Store(db) as store:
        run_suite(load_suite(suite), tmp_path / "ws", store)
        TALLY["injected"] += 1
        TALLY["recovered"] += 1
        with sqlite3.connect(db) as con:
            answers = con.execute("SELECT count(*) FROM answers").fetchone()[0]
            judged = con.execute("SELECT count(*) FROM judgments").fetchone()[0]
    assert answers == 16 and judged == 16
    integrity(db)
    assert not list((tmp_path / "ws").glob("**/*.partial*"))
