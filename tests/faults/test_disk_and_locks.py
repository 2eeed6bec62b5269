"""A full disk (a write error injected at the atomic-write helper and at the store's commit) and two runs on
one store at once: a clear one-line error, the previous outputs intact, and a store that is never corrupted."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.conftest import KEY_ENV, REPO, TALLY, compare, fuseval, integrity, snapshot, stub_suite
from tests.faults.test_kill_resume import traced


def _files(d: Path) -> dict[str, str]:
    """Every file under d (hidden ones too) with its sha256."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def _one_line(r) -> str:
    """The one error line (progress lines may come before it), with exit code 1 and no traceback."""
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert r.returncode == 1 and errors == lines[-1:] and "Traceback" not in r.stderr, r.stderr[-3000:]
    return errors[0]


@pytest.mark.timeout(600)
def test_a_full_disk_is_one_clear_line_and_leaves_earlier_outputs_intact(stub, tmp_path, rng):
    url, _ = stub
    suite = stub_suite(tmp_path, url)
    db, ws = tmp_path / "runs.db", tmp_path / "ws"
    commits = traced(tmp_path, "run", suite, "--workspace", tmp_path / "reference", "--store", tmp_path / "ref.db",
                     env=KEY_ENV)["store.commit"]

    # The disk fills up while a run stores its answers and judgments: the batch in hand is rolled back.
    n = rng.randint(2, commits)
    err = _one_line(fuseval("run", suite, "--workspace", ws, "--store", db, faults=f"store.commit@{n}:enospc",
                            env=KEY_ENV))
    assert f"{db}: cannot write to the store: No space left on device" in err
    integrity(db)
    r = fuseval("run", suite, "--workspace", ws, "--store", db, env=KEY_ENV)  # space is back: the run resumes
    assert r.returncode == 0, r.stderr[-3000:]
    compare(snapshot(tmp_path / "ref.db"), snapshot(db))
    TALLY["injected"] += 1
    TALLY["recovered"] += 1

    # ... and while the report is redrawn: every file already there stays as it was, nothing half-written appears.
    report = next((ws / "reports").iterdir())
    before = _files(report)
    writes = traced(tmp_path, "report", "latest", "--store", db)["files.write"]
    assert _files(report) == before  # the same run redrawn: byte for byte the same files
    for n in sorted({1, writes, rng.randint(1, writes)}):
        err = _one_line(fuseval("report", "latest", "--store", db, faults=f"files.write@{n}:enospc"))
        assert f"{report}" in err and ": cannot write: No space left on device" in err, err
        assert _files(report) == before
        TALLY["injected"] += 1


def _holder(lock: Path) -> str:
    try:
        return lock.read_text()
    except FileNotFoundError:
        return ""


@pytest.mark.timeout(600)
def test_two_runs_on_one_store_the_second_refuses_or_waits(stub, tmp_path):
    url, state = stub
    state.delay = 0.25  # slow answers keep the first run busy
    suite = stub_suite(tmp_path, url)
    db, ws = tmp_path / "runs.db", tmp_path / "ws"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite), "--workspace", str(ws), "--store", str(db)]
    env = {**os.environ, **KEY_ENV, "FUSEVAL_FAULTS": ""}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    started = [first]
    try:
        deadline = time.monotonic() + 120
        while f"pid {first.pid}" not in _holder(Path(f"{db}.lock")):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-3000:]
            time.sleep(0.1)
        err = _one_line(fuseval("run", suite, "--workspace", ws, "--store", db, env=KEY_ENV))
        assert f"{db}: the store is in use by `fuseval run` (pid {first.pid})" in err and "--wait" in err
        waiting = subprocess.Popen(cmd + ["--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env, cwd=REPO)
        started.append(waiting)
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-3000:]
        out2, err2 = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, err2[-3000:]
        assert f"waiting for `fuseval run` (pid {first.pid}) to finish" in err2
        assert "0 questions answered" in err2 and "judgments: 0 new" in err2  # it found the work done
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait()
    integrity(db)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM answers").fetchone()[0] == 2 * (24 + 10)
        assert con.execute("SELECT count(*) FROM judgments").fetchone()[0] == 2 * (24 + 10) * 2
        assert [s for (s,) in con.execute("SELECT status FROM runs ORDER BY started")] == ["done", "done"]
    TALLY["injected"] += 1
