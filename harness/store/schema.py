"""The run store's SQLite schema: its tables, what each column holds, and the schema version.

    for statement in statements(SCHEMA):   # one statement at a time, inside the caller's transaction
        db.execute(statement)

`harness/store/store.py` creates these tables on open and refuses a store whose version is newer than
SCHEMA_VERSION. The column comments are the store's documentation: keys, what NULL means, which
hash names what.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    hash TEXT PRIMARY KEY,            -- content hash of the weights (or of the name, for endpoints)
    name TEXT NOT NULL,
    path TEXT,
    recipe TEXT,                      -- the merge/fusion recipe that built it, if any
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS questions (
    qkey TEXT PRIMARY KEY,            -- hash of (category, turns): what the model is asked
    category TEXT NOT NULL,
    turns TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bench_questions (
    bench TEXT NOT NULL,
    question_id TEXT NOT NULL,        -- as written in the question file (json-encoded: ints stay ints)
    qkey TEXT NOT NULL REFERENCES questions(qkey),
    reference TEXT,                   -- reference answers (json list) as of the last load
    ref_version TEXT,                 -- hash of the references: judgments record which they used
    checks TEXT,                      -- programmatic checks (json list), where the set has them
    extra TEXT,
    PRIMARY KEY (bench, question_id)
);
CREATE TABLE IF NOT EXISTS answers (
    akey TEXT PRIMARY KEY,            -- hash of (model hash, qkey, sample, generation key)
    model_hash TEXT NOT NULL REFERENCES models(hash),
    qkey TEXT NOT NULL REFERENCES questions(qkey),
    sample INTEGER NOT NULL,
    gen_key TEXT NOT NULL,
    turns TEXT NOT NULL,              -- the answer to each turn (json list), raw as generated
    meta TEXT,                        -- temperature, chat template hash, token usage
    run_id TEXT,
    tstamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_by_model ON answers(model_hash, gen_key);
CREATE TABLE IF NOT EXISTS judgments (
    jkey TEXT PRIMARY KEY,            -- hash of (judge, answer keys, turn, repeat, reference version)
    kind TEXT NOT NULL CHECK (kind IN ('single', 'pair')),
    judge TEXT NOT NULL,              -- the judge's identity: model, prompt version, settings
    prompt_version TEXT NOT NULL,
    akey TEXT NOT NULL REFERENCES answers(akey),
    akey_b TEXT REFERENCES answers(akey),   -- pairwise: the second answer (A = akey, B = akey_b)
    turn INTEGER NOT NULL,            -- 1-based, as FastChat counts
    repeat INTEGER NOT NULL DEFAULT 0,
    ref_version TEXT,
    score REAL,                       -- single: the rating; NULL = missing (never 0)
    winner TEXT CHECK (winner IN ('A', 'B', 'tie')),  -- pair: NULL = missing
    detail TEXT,                      -- raw judge outputs, prompts, per-order verdicts, usage
    run_id TEXT,
    tstamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS judgments_by_answer ON judgments(akey);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    suite TEXT,
    config TEXT,
    git_sha TEXT,
    environment TEXT,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL DEFAULT 'running'
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT,
    model_hash TEXT NOT NULL,
    task TEXT NOT NULL,               -- lm-eval task, keyed with its settings (limit, few-shot)
    metric TEXT NOT NULL,
    value REAL,
    stderr REAL,
    detail TEXT,
    PRIMARY KEY (model_hash, task, metric)
);
CREATE TABLE IF NOT EXISTS results (  -- each run's headline numbers, for the nightly history
    run_id TEXT NOT NULL REFERENCES runs(id),
    suite TEXT,
    model TEXT NOT NULL,
    model_hash TEXT NOT NULL,
    bench TEXT NOT NULL,
    judge TEXT NOT NULL,
    mean REAL,
    low REAL,
    high REAL,
    questions INTEGER,
    PRIMARY KEY (run_id, model, bench, judge)
);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,            -- cache: a file's sha256 while its size and mtime are unchanged
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""


# The tables worth reading out (file_hashes is only a cache).
TABLES = ("models", "questions", "bench_questions", "answers", "judgments", "runs", "metrics", "results")


def statements(script: str) -> list[str]:
    """The statements of a script, comments dropped (executescript would commit the caller's transaction)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
