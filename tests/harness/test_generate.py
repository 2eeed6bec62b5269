"""Multi-turn generation: prompts, temperatures, seeds, failures retried, resume after a crash."""

from __future__ import annotations

import json

import pytest

from fusion.common.errors import FusevalError
from harness.backends.base import Backend, ChatResult
from harness.formats.questions import Question, load_answers
from harness.run.generate import DEFAULT_TEMPERATURES, GenerationSettings, failures_path, generate_answers, sample_seed


class Recorder(Backend):
    """Answers 'ans(<last user message>)#<seed>' and records every request; can fail or crash on cue."""

    def __init__(self, fail: set[str] = frozenset(), crash_after: int | None = None):
        self.model_id = "rec"
        self.requests = []
        self.fail, self.crash_after = set(fail), crash_after

    def generate(self, requests, on_done=None):
        out = []
        for r in requests:
            if self.crash_after is not None and len(self.requests) >= self.crash_after:
                raise KeyboardInterrupt  # a user's Ctrl-C (or a kill) in the middle of a run
            self.requests.append(r)
            last = r.messages[-1]["content"]
            if last in self.fail:
                out.append(ChatResult(text=None, error=f"boom on {last}"))
            else:
                out.append(ChatResult(text=f"  ans({last})#{r.params.seed}\n", completion_tokens=3, prompt_tokens=5))
            if on_done:
                on_done(1)
        return out


def questions(n: int = 6, category: str = "math") -> list[Question]:
    return [Question(question_id=i, category=category, turns=[f"q{i}a", f"q{i}b"]) for i in range(1, n + 1)]


def test_turn_two_sees_turn_one_answer_and_answers_are_stripped(tmp_path):
    b = Recorder()
    generate_answers(b, questions(2), tmp_path / "a.jsonl", GenerationSettings())
    t2 = [r for r in b.requests if r.messages[-1]["content"] == "q1b"][0]
    seed1 = sample_seed(0, 1, 0, 0)
    assert t2.messages == [{"role": "user", "content": "q1a"}, {"role": "assistant", "content": f"ans(q1a)#{seed1}"},
                           {"role": "user", "content": "q1b"}]
    (a1, _) = load_answers(tmp_path / "a.jsonl")
    assert a1.choices[0].turns == [f"ans(q1a)#{seed1}", f"ans(q1b)#{sample_seed(0, 1, 0, 1)}"]
    assert a1.model_id == "rec" and a1.usage["completion_tokens"] == 6


def test_per_category_temperatures_and_overrides(tmp_path):
    qs = [Question(question_id=i, category=c, turns=["x"]) for i, c in
          enumerate(["math", "writing", "stem", "coding", "poetry"])]
    b = Recorder()
    generate_answers(b, qs, tmp_path / "a.jsonl", GenerationSettings(temperatures={"stem": 0.3}, max_new_tokens=7))
    temps = [r.params.temperature for r in b.requests]
    assert temps == [0.0, DEFAULT_TEMPERATURES["writing"], 0.3, 0.0, 0.7]  # unknown category: the default
    assert {r.params.max_new_tokens for r in b.requests} == {7}
    b2 = Recorder()
    generate_answers(b2, qs, tmp_path / "b.jsonl", GenerationSettings(temperature=1.2))
    assert {r.params.temperature for r in b2.requests} == {1.2}


def test_samples_get_distinct_seeds_that_repeat_on_a_rerun(tmp_path):
    s = GenerationSettings(samples=3, seed=7)
    b1, b2 = Recorder(), Recorder()
    generate_answers(b1, questions(2, "writing"), tmp_path / "a.jsonl", s)
    generate_answers(b2, questions(2, "writing"), tmp_path / "b.jsonl", s)
    seeds = [r.params.seed for r in b1.requests]
    assert len(seeds) == 12 and len(set(seeds)) == 12
    assert seeds == [r.params.seed for r in b2.requests]
    (a, _) = load_answers(tmp_path / "a.jsonl")
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert len({tuple(c.turns) for c in a.choices}) == 3


def test_failed_question_is_not_written_and_is_retried_next_run(tmp_path):
    out = tmp_path / "a.jsonl"
    rep = generate_answers(Recorder(fail={"q2b", "q5a"}), questions(), out, GenerationSettings())
    assert rep.answered == 4 and rep.failed == 2
    assert sorted(a.question_id for a in load_answers(out)) == [1, 3, 4, 6]
    fails = [json.loads(x) for x in failures_path(out).read_text().splitlines()]
    assert {(f["question_id"], f["turn"]) for f in fails} == {(2, 2), (5, 1)}
    assert {f["error"] for f in fails} == {"boom on q2b", "boom on q5a"}
    b = Recorder()
    rep = generate_answers(b, questions(), out, GenerationSettings())
    assert rep.answered == 2 and rep.already_done == 4 and rep.failed == 0
    assert len(b.requests) == 4  # only the two failed questions, both turns again
    assert sorted(a.question_id for a in load_answers(out)) == [1, 2, 3, 4, 5, 6] and not failures_path(out).exists()


def test_crash_mid_run_keeps_finished_chunks_and_resume_completes_without_duplicates(tmp_path):
    out = tmp_path / "a.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_answers(Recorder(crash_after=9), questions(), out, GenerationSettings(), chunk_size=2)
    assert sorted(a.question_id for a in load_answers(out)) == [1, 2, 3, 4]  # 2 chunks of 2 questions x 2 turns done
    with open(out, "a") as f:
        f.write('{"question_id": 5, "answer_id": "cut')  # and the kill cut an append short
    b = Recorder()
    rep = generate_answers(b, questions(), out, GenerationSettings(), chunk_size=2)
    assert rep.already_done == 4 and rep.answered == 2 and len(b.requests) == 4
    ids = [a.question_id for a in load_answers(out)]
    assert sorted(ids) == [1, 2, 3, 4, 5, 6] and out.read_text().endswith("\n")


def test_answers_made_otherwise_are_not_resumed(tmp_path):
    out = tmp_path / "a.jsonl"
    generate_answers(Recorder(), questions(2), out, GenerationSettings(max_new_tokens=10))
    with pytest.raises(FusevalError, match="other generation settings"):
        generate_answers(Recorder(), questions(2), out, GenerationSettings(max_new_tokens=11))


def test_questions_with_different_turn_counts(tmp_path):
    qs = [Question(question_id=1, category="math", turns=["a"]),
          Question(question_id=2, category="math", turns=["b", "c", "d"])]
    generate_answers(Recorder(), qs, tmp_path / "a.jsonl", GenerationSettings())
    got = {a.question_id: a.choices[0].turns for a in load_answers(tmp_path / "a.jsonl")}
    assert len(got[1]) == 1 and len(got[2]) == 3
