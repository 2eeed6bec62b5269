"""FastChat data directories into the store and back out."""

from __future__ import annotations

import math

from harness.formats.exchange import export_fastchat, import_fastchat
from harness.formats.fastchat import load_fastchat_dir
from harness.store import Store
from tests.harness.test_fastchat_formats import PAIR, SINGLE, checkout  # noqa: F401  (fixture)


def test_import_keeps_every_grade_and_verdict_and_is_idempotent(checkout, tmp_path):  # noqa: F811
    store = Store(tmp_path / "s.db")
    rep = import_fastchat(store, checkout)
    assert sorted(rep.benches) == ["mini_bench", "plain_bench"]
    # 7 answer records, but plain_bench repeats vicuna's answer to the same question: one row by content
    assert (rep.answers, rep.judgments, rep.missing, rep.skipped) == (6, len(SINGLE) + len(PAIR), 2, 0)
    again = import_fastchat(store, checkout)
    assert (again.answers, again.judgments) == (0, 0)

    scores = store.scores(bench="mini_bench")
    got = {(r.model, r.question_id, r.turn): r.score for r in scores.itertuples()}
    for s in SINGLE:
        value = got[(s["model"], s["question_id"], s["turn"])]
        assert math.isnan(value) if s["score"] == -1 else value == s["score"]  # -1 is missing, not a grade
    assert set(scores["judge"]) == {"fastchat/gpt-4"}

    pairs = store.pairs(bench="mini_bench")
    for p in PAIR:
        row = pairs[(pairs.question_id == p["question_id"]) & (pairs.turn == p["turn"])].iloc[0]
        want = {"model_1": p["model_1"], "model_2": p["model_2"]}.get(
            p["g1_winner"] if p["g1_winner"] == p["g2_winner"] else None)
        if "error" in (p["g1_winner"], p["g2_winner"]):
            assert row.winner is None
        elif p["g1_winner"] != p["g2_winner"] or p["g1_winner"] == "tie":
            assert row.winner == "tie"
        else:
            assert (row.model_a if row.winner == "A" else row.model_b) == want
    # the reference file's answers became the math question's references (it had them already here)
    ref = store.db.execute("SELECT reference FROM bench_questions WHERE bench='mini_bench' AND question_id='111'")
    assert ref.fetchone()[0] is not None


def test_export_writes_what_fastchat_reads_back(checkout, tmp_path):  # noqa: F811
    store = Store(tmp_path / "s.db")
    import_fastchat(store, checkout)
    export_fastchat(store, tmp_path / "out", "mini_bench")
    back = load_fastchat_dir(tmp_path / "out" / "mini_bench").bench()
    orig = load_fastchat_dir(checkout).bench("mini_bench")
    assert [q.question_id for q in back.questions] == [q.question_id for q in orig.questions]
    for model, answers in orig.answers.items():
        assert {a.question_id: a.choices[0].turns for a in back.answers[model]} == \
               {a.question_id: a.choices[0].turns for a in answers}
    key = lambda s: (s.model, s.question_id, s.turn)  # noqa: E731
    assert {key(s): s.score for s in back.single["gpt-4"]} == {key(s): s.score for s in orig.single["gpt-4"]}
    assert {(p.question_id, p.turn): p.outcome for p in back.pair["gpt-4"]} == \
           {(p.question_id, p.turn): p.outcome for p in orig.pair["gpt-4"]}


def test_export_keeps_the_programmatic_checks(tmp_path):
    from harness.formats.questions import load_questions, resolve_bench

    questions = load_questions(resolve_bench("zoo"))[::20]
    with Store(tmp_path / "s.db") as store:
        store.add_questions("zoo", questions)
        export_fastchat(store, tmp_path / "out", "zoo")
    back = load_questions(tmp_path / "out" / "zoo" / "question.jsonl")
    assert [q.checks for q in back] == [q.checks for q in questions] and all(q.checks for q in back)
