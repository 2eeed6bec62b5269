"""The LLM judge's logic on a scripted backend: prompts, retries, missing verdicts, both orders, the store."""

from __future__ import annotations

import json

import pytest

from fusion.common.errors import FusevalError
from harness.backends.base import Backend, ChatResult
from harness.formats.questions import Question
from harness.judges.base import PairItem, SingleItem
from harness.judges.llm import LLMJudge, combine_orders
from harness.judges.prompts import RATING_SCHEMA, VERDICT_SCHEMA
from harness.run.evaluate import judge_pairs_into_store, judge_single_into_store
from harness.store import AnswerRow, Store


class Scripted(Backend):
    """Answers each request with reply(messages, params); None means the request failed."""

    def __init__(self, reply, json_schema: bool = False):
        self.model_id = "scripted-judge"
        self.reply = reply
        self.supports_json_schema = json_schema
        self.requests = []

    def generate(self, requests, on_done=None):
        out = []
        for r in requests:
            self.requests.append(r)
            text = self.reply(r.messages, r.params)
            out.append(ChatResult(text=text, prompt_tokens=10, completion_tokens=5) if text is not None
                       else ChatResult(text=None, error="HTTP 503: overloaded"))
        return out


Q = Question(question_id=7, category="math", turns=["What is 2+2?", "And times 3?"], reference=["4", "12"])
ANSWER = ["<think>scratch work, do not show</think>It is 4.", "It is 12."]


def test_single_prompt_holds_question_answer_reference_and_context():
    b = Scripted(lambda m, p: "Correct and brief. Rating: [[9]]")
    v1, v2 = LLMJudge(b, "j").single([SingleItem(Q, ANSWER, 1), SingleItem(Q, ANSWER, 2)])
    assert (v1.score, v2.score) == (9.0, 9.0)
    p1, p2 = (r.messages[-1]["content"] for r in b.requests)
    assert "What is 2+2?" in p1 and "It is 4." in p1 and "Reference answer for turn 1]\n4" in p1
    assert "scratch work" not in p1  # reasoning blocks are stripped before judging
    assert "And times 3?" not in p1
    assert "turn 2" in p2 and "What is 2+2?" in p2 and "It is 12." in p2 and "]\n12" in p2
    assert v2.prompt_version.endswith("single-ref-multi/text") and v2.detail["user_prompt"] == p2
    assert b.requests[0].messages[0]["role"] == "system"


def test_unreadable_verdict_is_asked_again_then_missing_never_zero():
    def reply(messages, params):
        last = messages[-1]["content"]
        if "could not be read" in last:  # the follow-up
            return "Rating: [[6]]" if "first" in messages[1]["content"] else "I would rather not."
        return "Hmm, hard to say."

    qa = Question(question_id=1, category="writing", turns=["first question"])
    qb = Question(question_id=2, category="writing", turns=["second question"])
    b = Scripted(reply)
    va, vb = LLMJudge(b, "j").single([SingleItem(qa, ["x"], 1), SingleItem(qb, ["y"], 1)])
    assert va.score == 6.0 and va.detail["retry"] == "Rating: [[6]]" and not va.detail["unreadable"]
    assert vb.score is None and vb.error is None and vb.detail["unreadable"]
    follow = b.requests[-1].messages
    assert follow[-2] == {"role": "assistant", "content": "Hmm, hard to say."}  # the judge sees its own reply


def test_json_mode_sends_the_schema_and_reads_json():
    b = Scripted(lambda m, p: json.dumps({"explanation": "fine", "rating": 7}), json_schema=True)
    judge = LLMJudge(b, "j")
    assert judge.json_mode and "/json/" in judge.id
    (v,) = judge.single([SingleItem(Q, ANSWER, 1)])
    assert v.score == 7.0 and b.requests[0].params.json_schema == RATING_SCHEMA
    with pytest.raises(FusevalError, match="cannot enforce JSON schemas"):
        LLMJudge(Scripted(lambda m, p: ""), "j", structured=True)


@pytest.mark.parametrize("g1,g2,want", [("A", "A", "A"), ("B", "B", "B"), ("A", "B", "tie"), ("tie", "A", "tie"),
                                        (None, "A", None), ("tie", "tie", "tie")])
def test_orders_combine(g1, g2, want):
    assert combine_orders(g1, g2) == want


def test_pairwise_runs_both_orders_and_a_position_bias_is_a_tie():
    good, bad = ["It is 4."], ["It is 5."]

    def fair(messages, params):  # prefers the reply that says 4, wherever it is
        text = messages[-1]["content"]
        return "Verdict: [[A]]" if text.index("It is 4.") < text.index("It is 5.") else "Verdict: [[B]]"

    def biased(messages, params):
        return "A is first, so A. [[A]]"

    q = Question(question_id=1, category="math", turns=["What is 2+2?"])
    (v,) = LLMJudge(Scripted(fair), "j").pair([PairItem(q, good, bad, 1)])
    assert v.winner == "A" and v.detail["g1_winner"] == "A" and v.detail["g2_winner"] == "A"
    (v,) = LLMJudge(Scripted(fair), "j").pair([PairItem(q, bad, good, 1)])
    assert v.winner == "B"
    b = Scripted(biased, json_schema=False)
    (v,) = LLMJudge(b, "j").pair([PairItem(q, good, bad, 1)])
    assert v.winner == "tie" and len(b.requests) == 2
    b = Scripted(lambda m, p: json.dumps({"explanation": "x", "verdict": "B"}), json_schema=True)
    LLMJudge(b, "j").pair([PairItem(q, good, bad, 1)])
    assert b.requests[0].params.json_schema == VERDICT_SCHEMA


def _store_with_answers(tmp_path, models=("m",)):
    store = Store(tmp_path / "s.db")
    qk = store.add_questions("set", [Q])
    hashes = []
    for i, name in enumerate(models):
        h = store.add_model(name)
        store.add_answers([AnswerRow(h, qk[7], 0, "g", [f"It is {4 + i}.", f"It is {12 + i}."])])
        hashes.append(h)
    return store, hashes


def test_judging_through_the_store_skips_done_work_and_retries_endpoint_errors(tmp_path):
    store, (m,) = _store_with_answers(tmp_path)
    down = {"on": True}
    b = Scripted(lambda msgs, p: None if down["on"] and "turn 2" in msgs[-1]["content"] else "[[8]]")
    judge = LLMJudge(b, "j")
    rep = judge_single_into_store(store, judge, m, "set", [Q], gen_key="g")
    assert (rep.items, rep.judged, rep.errors) == (2, 1, 1) and "503" in rep.first_error
    down["on"] = False
    rep = judge_single_into_store(store, judge, m, "set", [Q], gen_key="g")
    assert (rep.already, rep.judged, rep.errors) == (1, 1, 0)
    n = len(b.requests)
    rep = judge_single_into_store(store, judge, m, "set", [Q], gen_key="g")
    assert rep.already == 2 and len(b.requests) == n  # nothing asked again
    df = store.scores(bench="set")
    assert sorted(df["turn"]) == [1, 2] and set(df["score"]) == {8.0} and set(df["judge"]) == {judge.id}
    # a corrected reference is a new judgment; the old one stays in the store
    fixed = Question(question_id=7, category="math", turns=Q.turns, reference=["4", "twelve"])
    rep = judge_single_into_store(store, judge, m, "set", [fixed], gen_key="g")
    assert (rep.already, rep.judged) == (1, 1)


def test_pairwise_through_the_store_is_one_judgment_whichever_order_is_asked(tmp_path):
    store, (a, b_) = _store_with_answers(tmp_path, ("a", "b"))
    b = Scripted(lambda m, p: "[[A]]" if m[-1]["content"].index("It is 4") < m[-1]["content"].index("It is 5")
                 else "[[B]]")
    judge = LLMJudge(b, "j")
    rep = judge_pairs_into_store(store, judge, a, b_, "set", [Q], gen_key="g")
    assert rep.judged == 2
    rep = judge_pairs_into_store(store, judge, b_, a, "set", [Q], gen_key="g")
    assert rep.already == 2 and rep.judged == 0
    df = store.pairs(bench="set")
    turn1 = df[df.turn == 1].iloc[0]
    winner = turn1.model_a if turn1.winner == "A" else turn1.model_b
    assert winner == "a"  # the answer saying 4 wins, whatever order the rows are stored in


def test_a_judge_that_always_picks_the_first_answer_flips_with_the_order_and_the_table_counts_it(tmp_path):
    from harness.analysis.summary import win_table

    store, (a, b_) = _store_with_answers(tmp_path, ("a", "b"))
    judge_pairs_into_store(store, LLMJudge(Scripted(lambda m, p: "[[A]]"), "first"), a, b_, "set", [Q], gen_key="g")
    fair = Scripted(lambda m, p: "[[A]]" if m[-1]["content"].index("It is 4") < m[-1]["content"].index("It is 5")
                    else "[[B]]")
    judge_pairs_into_store(store, LLMJudge(fair, "fair"), a, b_, "set", [Q], gen_key="g")
    df = store.pairs(bench="set")
    df["judge"] = df["judge"].str.split("/").str[1]  # llm/NAME/prompt/...: the name
    assert df.groupby("judge")["flipped"].agg(list).to_dict() == {"first": [True, True], "fair": [False, False]}
    assert (df[df.judge == "first"]["winner"] == "tie").all()  # a flip is a tie, never a win
    rows = win_table(df, n_boot=200).set_index("judge")
    assert rows.loc["first", ["order_flips", "order_judged"]].tolist() == [2, 2]
    assert rows.loc["fair", ["order_flips", "order_judged"]].tolist() == [0, 2]


def test_empty_judge_output_is_missing_and_counted(tmp_path):
    store, (m,) = _store_with_answers(tmp_path)
    b = Scripted(lambda msgs, p: "")
    rep = judge_single_into_store(store, LLMJudge(b, "j"), m, "set", [Q], gen_key="g")
    assert (rep.items, rep.judged, rep.missing, rep.errors) == (2, 2, 2, 0)
    assert len(b.requests) == 4  # each asked once more before it is stored as missing
    assert store.scores(bench="set")["score"].isna().all()


def test_answers_to_questions_outside_the_set_are_not_judged(tmp_path):
    store, (m,) = _store_with_answers(tmp_path)
    other = Question(question_id=8, category="math", turns=["What is 3+3?"], reference=["6"])
    qk = store.add_questions("set", [other])
    store.add_answers([AnswerRow(m, qk[8], 0, "g", ["6"])])
    b = Scripted(lambda msgs, p: "[[7]]")
    rep = judge_single_into_store(store, LLMJudge(b, "j"), m, "set", [Q], gen_key="g")
    assert (rep.items, rep.judged) == (2, 2) and all("3+3" not in r.messages[-1]["content"] for r in b.requests)


def test_judge_reliability_reports_the_re_judge_spread_and_the_order_flips(tmp_path):
    from harness.analysis.details import judge_reliability

    store, (a, b_) = _store_with_answers(tmp_path, ("a", "b"))
    grades = iter([6, 8, 7, 7, 3, 3, 9, 5] * 4)
    judge = LLMJudge(Scripted(lambda m, p: f"Rating: [[{next(grades)}]]"), "noisy")
    for m in (a, b_):
        judge_single_into_store(store, judge, m, "set", [Q], gen_key="g", repeats=2)
    judge_pairs_into_store(store, LLMJudge(Scripted(lambda m, p: "[[A]]"), "noisy"), a, b_, "set", [Q],
                           gen_key="g")
    jid = store.scores(bench="set")["judge"].iloc[0]
    # Independently: the two grades of each answer turn side by side.
    wide = store.scores(bench="set").pivot_table(index=["akey", "turn"], columns="repeat", values="score")
    gaps = (wide[0] - wide[1]).abs()
    text = judge_reliability(store, "set", jid)
    assert text.startswith(f"{jid} on set: re-judged: {int((gaps > 0).sum())} of {len(gaps)} answer turns")
    assert f"{gaps.mean():.2f} apart" in text
    assert "changed 2 of 2 pairwise verdicts (100%)" in text
    assert judge_reliability(store, "other-bench", jid) is None
