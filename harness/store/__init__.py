"""The run store: SQLite (WAL), every row keyed by its content, so runs resume and repeats add nothing.

    with exclusive("runs/fuseval.db", "run"), Store("runs/fuseval.db") as store:
        store.add_answers([...])
        df = store.scores(bench="zoo")

Modules: `store` (the Store and its rows), `schema` (the tables), `frames` (DataFrame readers),
`keys` (content keys), `lock` (one writer at a time), `provenance` (versions and git sha of a run).
"""

from harness.store.keys import answer_key, judgment_key, question_key
from harness.store.lock import exclusive
from harness.store.store import DEFAULT_PATH, AnswerRow, JudgmentRow, Store

__all__ = ["DEFAULT_PATH", "AnswerRow", "JudgmentRow", "Store", "answer_key", "exclusive", "judgment_key",
           "question_key"]
