"""The LLM judge end to end on a real vLLM server: prompt built, JSON schema enforced, parsed, stored.

The judge is the world's pivot with a longer context (judge prompts run to ~800 tokens of its
character-level vocabulary); its grades mean nothing, the path they travel is what is tested.
"""

from __future__ import annotations

import json

import pytest

from harness.backends.vllm_server import VLLMBackend, VLLMOptions, vllm_available
from harness.formats.questions import load_questions, resolve_bench
from harness.judges.llm import LLMJudge
from harness.judges.prompts import RATING_SCHEMA, VERDICT_SCHEMA
from harness.run.evaluate import judge_pairs_into_store, judge_single_into_store
from harness.store import AnswerRow, Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed (make test installs it)")]


def _conforms(text: str, schema: dict) -> dict:
    obj = json.loads(text)  # raises if the server did not honour the schema
    assert set(obj) == set(schema["required"])
    assert len(obj["explanation"]) <= schema["properties"]["explanation"]["maxLength"]
    return obj


def test_llm_judge_on_vllm_with_structured_output(judge_dir, tmp_path):
    questions = load_questions(resolve_bench("zoo"))[::20]  # one question of each domain
    store = Store(tmp_path / "s.db")
    qk = store.add_questions("zoo", questions)
    oracle, wrong = store.add_model("oracle"), store.add_model("wrong")
    store.add_answers([AnswerRow(oracle, qk[q.question_id], 0, "g", q.reference) for q in questions])
    store.add_answers([AnswerRow(wrong, qk[q.question_id], 0, "g", ["I do not know."] * len(q.turns))
                       for q in questions])
    with VLLMBackend(judge_dir, VLLMOptions(), log_dir=tmp_path / "logs", model_id="tiny-judge") as b:
        judge = LLMJudge(b, "tiny-judge@test", max_new_tokens=1200)
        assert judge.json_mode  # vLLM enforces the schema, so the judge asks for JSON
        rep = judge_single_into_store(store, judge, oracle, "zoo", questions, "g")
        assert (rep.items, rep.judged, rep.errors) == (2 * len(questions), 2 * len(questions), 0)
        pair = judge_pairs_into_store(store, judge, oracle, wrong, "zoo", questions[:3], "g")
        assert (pair.judged, pair.errors) == (6, 0)
        again = judge_single_into_store(store, judge, oracle, "zoo", questions, "g")
        assert (again.already, again.judged) == (2 * len(questions), 0)

    scores = store.scores(bench="zoo")
    assert len(scores) == 2 * len(questions) and set(scores["judge"]) == {judge.id}
    for jkey, score in zip(scores["jkey"], scores["score"]):
        detail = json.loads(store.db.execute("SELECT detail FROM judgments WHERE jkey=?", (jkey,)).fetchone()[0])
        obj = _conforms(detail["judgment"], RATING_SCHEMA)
        assert 1 <= obj["rating"] <= 10 and score == obj["rating"]
        assert "[Reference answer for turn" in detail["user_prompt"]  # zoo questions carry references
    pairs = store.pairs(bench="zoo")
    assert len(pairs) == 6 and set(pairs["winner"]) <= {"A", "B", "tie"}
    for jkey in pairs["jkey"]:
        detail = json.loads(store.db.execute("SELECT detail FROM judgments WHERE jkey=?", (jkey,)).fetchone()[0])
        for game in ("g1", "g2"):
            assert _conforms(detail[game]["judgment"], VERDICT_SCHEMA)["verdict"] in ("A", "B", "tie")
