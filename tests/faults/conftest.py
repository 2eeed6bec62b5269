"""The fault suite's tools: an OpenAI-compatible stub endpoint, a small suite served by it, store snapshots,
and a tally of faults injected, runs recovered and rows lost, printed at the end of the session.

Faults are injected through failpoints (fusion/common/faults.py, `FUSEVAL_FAULTS`): the process is killed with
SIGKILL, or a write fails with ENOSPC, the N-th time it passes a named point, N drawn at random from a
seed printed with the tally (`FUSEVAL_FAULT_SEED` picks another one).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("FUSEVAL_FAULT_SEED", "20261129"))
TALLY: Counter = Counter()


def report(terminalreporter) -> None:
    """The tally, at the end of the session (called from tests/conftest.py: only initial conftests get the hook)."""
    if TALLY:
        terminalreporter.write_line(
            f"fault suite (seed {SEED}): {TALLY['injected']} faults injected, {TALLY['recovered']} runs recovered, "
            f"{TALLY['lost']} rows lost, {TALLY['duplicated']} rows duplicated")


@pytest.fixture
def rng(request) -> random.Random:
    return random.Random(f"{SEED}:{request.node.name}")


def fuseval(*args, faults: str = "", env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`fuseval ARGS` in a subprocess, with failpoints `faults` armed."""
    e = {**os.environ, "FUSEVAL_FAULTS": faults, **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=REPO)


def write_questions(path: Path, chat_faults: list[str] | None = None) -> dict[str, Path]:
    """Two question sets: `checks` (programmatic) and `chat` (judged by the stub judge; turn 1 of question k
    carries `JUDGE=<chat_faults[k]>` where given)."""
    checks = [{"question_id": k, "category": "math",
               "turns": [f"Repeat the number {k}.", f"Now say {k + 1} and then {2 * k}."],
               "checks": [{"type": "numeric", "answer": k}, {"type": "numeric", "answer": 2 * k if k % 3 else -1}]}
              for k in range(1, 25)]
    faults = chat_faults or []
    chat = [{"question_id": 100 + k, "category": "writing",
             "turns": [f"Write a line about topic {k}." + (f" JUDGE={faults[k]}" if k < len(faults) else ""),
                       f"Now make it shorter, topic {k}."]}
            for k in range(max(10, len(faults)))]
    out = {}
    for name, rows in (("checks", checks), ("chat", chat)):
        p = path / name / "question.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out[name] = p
    return out


def stub_suite(tmp_path: Path, url: str, chat_faults: list[str] | None = None, judge_options: dict | None = None,
               models=("pivot", "merged")) -> Path:
    """A suite whose models and judge are all served by the stub: fast enough to kill many times over."""
    q = write_questions(tmp_path / "q", chat_faults)
    suite = {
        "name": "faults",
        "baselines": [{"name": models[0], "model": models[0]}],
        "candidates": [{"name": m, "model": m} for m in models[1:]],
        "benchmarks": [{"questions": str(q["checks"]), "name": "checks"},
                       {"questions": str(q["chat"]), "name": "chat", "judge": "llm"}],
        "backend": {"kind": "openai", "base_url": url, "api_key_env": "FUSEVAL_FAULT_KEY",
                    "options": {"backoff_s": 0.01, "max_retries": 1, "timeout_s": 10}},
        "judge": {"model": "stub-judge", "backend": "openai", "base_url": url, "api_key_env": "FUSEVAL_FAULT_KEY",
                  "options": {"backoff_s": 0.01, "max_retries": 2, "timeout_s": 10, **(judge_options or {})}},
        "generation": {"max_new_tokens": 32},
        "gate": {"baseline": models[0], "margin": 0.05},
    }
    p = tmp_path / "faults.yml"
    p.write_text(yaml.safe_dump(suite, sort_keys=False))
    return p


KEY_ENV = {"FUSEVAL_FAULT_KEY": "sk-fault-suite-not-a-real-key"}


def snapshot(db: Path) -> dict[str, dict]:
    """The store's answers and judgments by key: what a run must neither lose nor repeat."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        answers = {r[0]: r[1:] for r in con.execute("SELECT akey, model_hash, qkey, sample, turns FROM answers")}
        judgments = {r[0]: r[1:] for r in con.execute("SELECT jkey, akey, turn, judge, score FROM judgments")}
    return {"answers": answers, "judgments": judgments}


def integrity(db: Path) -> None:
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        dup = con.execute("SELECT count(*) FROM (SELECT akey, turn, judge, repeat FROM judgments "
                          "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1)").fetchone()[0]
        TALLY["duplicated"] += dup
        assert dup == 0


def compare(reference: dict, got: dict) -> None:
    """`got` holds exactly the reference's rows: count the lost and the extra ones, then insist on none."""
    for table in ("answers", "judgments"):
        lost = set(reference[table]) - set(got[table])
        TALLY["lost"] += len(lost)
        TALLY["duplicated"] += len(set(got[table]) - set(reference[table]))
        assert not lost and set(got[table]) == set(reference[table]), table
        assert all(got[table][k] == v for k, v in reference[table].items()), table
