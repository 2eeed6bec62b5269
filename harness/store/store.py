"""The run store: one SQLite file (WAL) holding models, questions, answers, judgments and runs.

    store = Store("runs/fuseval.db")
    m = store.add_model("pivot", path="runs/world/pivot")          # content hash of the weights
    store.add_questions("zoo", questions)
    store.add_answers([...]); store.add_judgments([...])            # content-keyed: repeats do nothing
    df = store.scores(bench="zoo")                                  # one row per judged turn

Every row is keyed by its content: an answer by (model hash, question content, sample, generation
settings), a judgment by (judge, prompt version, answer(s), turn, repeat, reference version). Writes
are `INSERT OR IGNORE` inside one transaction per batch, so re-running the same work adds nothing,
and a process killed at any moment (kill -9) leaves either the whole batch or none of it; the next
run finds what is there and does only the rest. Two processes may write at once (WAL, busy wait).
The tables are in `schema.py`; the DataFrame readers (`scores`, `pairs`, `frame`, ...) in `frames.py`,
which `Store` inherits; content keys in `keys.py`; the one-writer lock in `lock.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion.common import faults
from fusion.common.errors import FusevalError
from fusion.common.hashing import digest
from harness.store.frames import StoreFrames
from harness.store.keys import answer_key, judgment_key, question_key
from harness.store.provenance import environment, git_sha
from harness.store.schema import SCHEMA, SCHEMA_VERSION, statements

DEFAULT_PATH = Path("runs/fuseval.db")


def _qid(question_id: int | str) -> str:
    return json.dumps(question_id)


@dataclass
class AnswerRow:
    model_hash: str
    qkey: str
    sample: int
    gen_key: str
    turns: list[str]
    meta: dict | None = None

    @property
    def akey(self) -> str:
        return answer_key(self.model_hash, self.qkey, self.sample, self.gen_key)


@dataclass
class JudgmentRow:
    kind: str  # 'single' | 'pair'
    judge: str
    prompt_version: str
    akey: str
    turn: int
    akey_b: str | None = None
    repeat: int = 0
    ref_version: str | None = None
    score: float | None = None
    winner: str | None = None
    detail: dict | None = None

    @property
    def jkey(self) -> str:
        return judgment_key(self.judge, self.akey, self.akey_b, self.turn, self.repeat, self.ref_version)


class Store(StoreFrames):
    """The SQLite run store; open one per process (connections are not shared across threads)."""

    def __init__(self, path: str | os.PathLike = DEFAULT_PATH, timeout_s: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
            self.db.execute("PRAGMA foreign_keys=ON")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise FusevalError(f"{self.path}: store schema version {version} is newer than this fuseval "
                                   f"understands ({SCHEMA_VERSION}); upgrade fuseval")
            with self.transaction():
                for statement in statements(SCHEMA):  # executescript would commit our transaction
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            raise FusevalError(f"{self.path}: not a usable fuseval store ({e})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: all of it lands or none (BEGIN IMMEDIATE waits for other writers)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            faults.point("store.commit")
            self.db.execute("COMMIT")
        except BaseException as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(e, (OSError, sqlite3.OperationalError)):  # a full disk ("database or disk is full")
                raise FusevalError(f"{self.path}: cannot write to the store: {getattr(e, 'strerror', None) or e}; "
                                   "nothing of this batch was kept") from e
            raise

    # -- models ------------------------------------------------------------------------------

    def add_model(self, name: str, path: str | os.PathLike | None = None, recipe: str | None = None,
                  content_hash: str | None = None) -> str:
        """Register a model and return its content hash: of its weights (a local path) or its name."""
        if content_hash is None:
            content_hash = self.model_hash(path) if path is not None else digest("name", name)
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO models(hash, name, path, recipe, created) VALUES (?,?,?,?,?)",
                       (content_hash, name, str(path) if path is not None else None, recipe, time.time()))
            db.execute("UPDATE models SET name=?, path=COALESCE(?, path), recipe=COALESCE(?, recipe) WHERE hash=?",
                       (name, str(path) if path is not None else None, recipe, content_hash))
        return content_hash

    def model_hash(self, path: str | os.PathLike) -> str:
        """Content hash of a checkpoint directory: its config and weight files (cached by size and mtime)."""
        root = Path(path)
        if not root.is_dir():
            raise FusevalError(f"{root}: no such model directory")
        files = sorted(p for p in root.iterdir() if p.is_file() and (
            p.suffix in (".safetensors", ".bin") or p.name in ("config.json", "tokenizer.json", "tokenizer_config.json",
                                                               "chat_template.jinja", "generation_config.json")))
        if not any(p.suffix in (".safetensors", ".bin") for p in files):
            raise FusevalError(f"{root}: no weight files (*.safetensors) to hash")
        return digest("model", [(p.name, self.file_sha(p)) for p in files])

    def file_sha(self, p: Path) -> str:
        """sha256 of a file, cached by path, size and mtime."""
        st = p.stat()
        key = str(p.resolve())
        row = self.db.execute("SELECT size, mtime_ns, sha256 FROM file_hashes WHERE path=?", (key,)).fetchone()
        if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
            return row[2]
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        sha = h.hexdigest()
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO file_hashes VALUES (?,?,?,?)", (key, st.st_size, st.st_mtime_ns, sha))
        return sha

    def model_by_name(self, name: str) -> str:
        """The hash of the most recently registered model with this name."""
        row = self.db.execute("SELECT hash FROM models WHERE name=? ORDER BY created DESC LIMIT 1", (name,)).fetchone()
        if row is None:
            raise FusevalError(f"{self.path}: no model named {name!r} in the store")
        return row[0]

    def model_names(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT hash, name FROM models"))

    # -- questions ---------------------------------------------------------------------------

    def add_questions(self, bench: str, questions: Iterable) -> dict[Any, str]:
        """Load a question set under a bench name; returns {question_id: qkey}. A changed question replaces the old."""
        out = {}
        with self.transaction() as db:
            for q in questions:
                qkey = question_key(q.category, q.turns)
                ref = getattr(q, "reference", None)
                checks = getattr(q, "checks", None)
                extra = {k: v for k, v in (q.model_extra or {}).items() if k != "checks"}
                db.execute("INSERT OR IGNORE INTO questions VALUES (?,?,?)", (qkey, q.category, json.dumps(q.turns)))
                db.execute("INSERT OR REPLACE INTO bench_questions VALUES (?,?,?,?,?,?,?)",
                           (bench, _qid(q.question_id), qkey, json.dumps(ref) if ref is not None else None,
                            digest("ref", ref) if ref is not None else None,
                            json.dumps(_plain(checks)) if checks is not None else None,
                            json.dumps(extra) if extra else None))
                out[q.question_id] = qkey
        return out

    # -- answers -----------------------------------------------------------------------------

    def answered(self, model_hash: str, gen_key: str) -> set[tuple[str, int]]:
        """(qkey, sample) pairs already answered by this model with these settings."""
        return set(self.db.execute("SELECT qkey, sample FROM answers WHERE model_hash=? AND gen_key=?",
                                   (model_hash, gen_key)))

    def add_answers(self, rows: Iterable[AnswerRow], run_id: str | None = None) -> int:
        """Insert answers in one transaction; returns how many were new."""
        now = time.time()
        with self.transaction() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO answers VALUES (?,?,?,?,?,?,?,?,?)", [
                (r.akey, r.model_hash, r.qkey, r.sample, r.gen_key, json.dumps(r.turns, ensure_ascii=False),
                 json.dumps(r.meta) if r.meta else None, run_id, now) for r in rows])
            return db.total_changes - before

    def answers(self, model_hash: str, bench: str, gen_key: str | None = None) -> list[dict]:
        """This model's answers to a bench's questions: dicts with akey, question_id, qkey, sample, turns, ..."""
        sql = ("SELECT a.akey, b.question_id, a.qkey, a.sample, a.gen_key, a.turns, a.meta FROM answers a "
               "JOIN bench_questions b ON a.qkey=b.qkey WHERE b.bench=? AND a.model_hash=?")
        args: list = [bench, model_hash]
        if gen_key is not None:
            sql += " AND a.gen_key=?"
            args.append(gen_key)
        return [{"akey": r[0], "question_id": json.loads(r[1]), "qkey": r[2], "sample": r[3], "gen_key": r[4],
                 "turns": json.loads(r[5]), "meta": json.loads(r[6]) if r[6] else {}}
                for r in self.db.execute(sql + " ORDER BY b.rowid, a.sample", args)]

    # -- judgments ---------------------------------------------------------------------------

    def judged(self, jkeys: Iterable[str]) -> set[str]:
        keys = list(jkeys)
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            found |= {r[0] for r in self.db.execute(
                f"SELECT jkey FROM judgments WHERE jkey IN ({','.join('?' * len(part))})", part)}
        return found

    def add_judgments(self, rows: Iterable[JudgmentRow], run_id: str | None = None) -> int:
        """Insert judgments in one transaction; returns how many were new."""
        now = time.time()
        with self.transaction() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO judgments VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
                (r.jkey, r.kind, r.judge, r.prompt_version, r.akey, r.akey_b, r.turn, r.repeat, r.ref_version,
                 r.score, r.winner, json.dumps(r.detail, ensure_ascii=False) if r.detail else None, run_id, now)
                for r in rows])
            return db.total_changes - before

    # -- runs --------------------------------------------------------------------------------

    def start_run(self, suite: str | None = None, config: dict | None = None) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        with self.transaction() as db:
            db.execute("INSERT INTO runs(id, suite, config, git_sha, environment, started) VALUES (?,?,?,?,?,?)",
                       (run_id, suite, json.dumps(config) if config else None, git_sha(), json.dumps(environment()),
                        time.time()))
        return run_id

    def end_run(self, run_id: str, status: str = "done", config: dict | None = None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET ended=?, status=?, config=COALESCE(?, config) WHERE id=?",
                       (time.time(), status, json.dumps(config) if config else None, run_id))

    def run(self, run_id: str) -> dict:
        """One run's row (config decoded); 'latest' is the newest finished suite run (one with models to report:
        not an `eval`, `pairwise` or A/A check)."""
        if run_id == "latest":
            row = self.db.execute("SELECT id FROM runs WHERE status='done' AND json_extract(config, '$.models') "
                                  "IS NOT NULL ORDER BY started DESC LIMIT 1").fetchone()
            if row is None:
                raise FusevalError(f"{self.path}: no finished run yet")
            run_id = row[0]
        cur = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,))
        row = cur.fetchone()
        if row is None:
            raise FusevalError(f"{self.path}: no run {run_id!r}")
        out = dict(zip([c[0] for c in cur.description], row))
        out["config"] = json.loads(out["config"]) if out["config"] else {}
        return out

    def latest_run(self, suite: str) -> str | None:
        """The newest finished run of a suite, or None."""
        row = self.db.execute("SELECT id FROM runs WHERE suite=? AND status='done' ORDER BY started DESC LIMIT 1",
                              (suite,)).fetchone()
        return row[0] if row else None

    # -- metrics and results -------------------------------------------------------------------

    def has_metrics(self, model_hash: str, task: str) -> bool:
        return self.db.execute("SELECT 1 FROM metrics WHERE model_hash=? AND task=? LIMIT 1",
                               (model_hash, task)).fetchone() is not None

    def add_metrics(self, run_id: str | None, model_hash: str, task: str, rows: Iterable[dict]) -> None:
        """lm-eval metrics of one model on one task key: {metric, value, stderr, ...} each."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?)", [
                (run_id, model_hash, task, r["metric"], r.get("value"), r.get("stderr"),
                 json.dumps({k: v for k, v in r.items() if k not in ("metric", "value", "stderr")}, default=str))
                for r in rows])

    def add_results(self, run_id: str, suite: str, rows: Iterable[dict]) -> None:
        """A run's headline numbers (one per model, bench and judge), kept for the history."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?)", [
                (run_id, suite, r["model"], r["model_hash"], r["bench"], r["judge"], r.get("mean"), r.get("low"),
                 r.get("high"), r.get("questions")) for r in rows])


def _plain(obj: Any) -> Any:
    """Pydantic models (checks) to plain json data."""
    if isinstance(obj, list):
        return [_plain(o) for o in obj]
    return obj.model_dump() if hasattr(obj, "model_dump") else obj
