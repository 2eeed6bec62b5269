"""Question and answer files in FastChat's formats: reading, writing, one-line errors, our sets."""

from __future__ import annotations

import json

import pytest

from fusion.common.errors import FusevalError
from fusion.zoo import domains
from harness.formats.questions import (
    Answer,
    Choice,
    load_answers,
    load_questions,
    resolve_bench,
    write_answers,
    write_questions,
)
from harness.formats.zoo import zoo_questions

# Lines in FastChat's MT-Bench layout (written for this test): ids, categories, turns, references.
FASTCHAT_QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a haiku about rain.", "Now one about snow."]},
    {"question_id": 111, "category": "math", "turns": ["What is 3 + 4?", "And times 2?"], "reference": ["7", "14"]},
]
FASTCHAT_ANSWER = {"question_id": 81, "answer_id": "Zp3XkEt5cQ", "model_id": "vicuna-7b",
                   "choices": [{"index": 0, "turns": ["Grey drops fall.", "White flakes drift."]}],
                   "tstamp": 1687000000.5}


def write_lines(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def test_reads_fastchat_questions_and_writes_them_back(tmp_path):
    src = write_lines(tmp_path / "question.jsonl", FASTCHAT_QUESTIONS)
    qs = load_questions(src)
    assert [q.question_id for q in qs] == [81, 111] and qs[1].reference == ["7", "14"] and qs[0].reference is None
    write_questions(tmp_path / "again.jsonl", qs)
    assert [json.loads(x) for x in (tmp_path / "again.jsonl").read_text().splitlines()] == FASTCHAT_QUESTIONS


def test_unknown_category_and_extra_keys_are_kept(tmp_path):
    src = write_lines(tmp_path / "q.jsonl",
                      [{"question_id": "a1", "category": "poetry", "turns": ["Hi"], "tests": ["x"]}])
    (q,) = load_questions(src)
    assert q.category == "poetry" and q.model_dump()["tests"] == ["x"]


@pytest.mark.parametrize("line, message", [
    ('{"question_id": 1, "category": "math", "turns": ["a"', ":2: not valid JSON"),
    ('{"question_id": 1, "category": "math"}', ":2: field 'turns': Field required"),
    ('{"question_id": 1, "category": "math", "turns": []}', ":2: field 'turns'"),
    ('{"question_id": 1, "category": "math", "turns": [3]}', ":2: field 'turns.0'"),
    ('{"question_id": 1, "category": "math", "turns": ["  "]}', ":2: field 'turns': Value error, a turn is empty"),
    ('{"question_id": [1], "category": "math", "turns": ["a"]}', ":2: field 'question_id"),
    ('["not", "an", "object"]', ":2: expected a JSON object"),
    ('{"question_id": 81, "category": "x", "turns": ["a"]}', "question_id 81 appears twice"),
    ('{"question_id": 2, "category": "x", "turns": ["a", "b"], "reference": ["r"]}', "has 2 turns but 1 references"),
])
def test_bad_question_lines_name_file_line_and_field(tmp_path, line, message):
    src = write_lines(tmp_path / "question.jsonl", [FASTCHAT_QUESTIONS[0], line])
    with pytest.raises(FusevalError) as e:
        load_questions(src)
    assert str(e.value).startswith(str(src)) and message in str(e.value) and "\n" not in str(e.value)


def test_empty_or_missing_question_files(tmp_path):
    with pytest.raises(FusevalError, match="no questions"):
        load_questions(write_lines(tmp_path / "q.jsonl", []))
    with pytest.raises(FusevalError, match="no such file"):
        load_questions(tmp_path / "nope.jsonl")
    with pytest.raises(FusevalError, match="no such question set"):
        resolve_bench(tmp_path / "nope")


def test_resolve_bench_names_paths_and_directories(tmp_path):
    assert resolve_bench("general").name == "question.jsonl" and resolve_bench("general").exists()
    write_lines(tmp_path / "question.jsonl", FASTCHAT_QUESTIONS)
    assert resolve_bench(tmp_path) == tmp_path / "question.jsonl"
    assert resolve_bench(str(tmp_path / "question.jsonl")) == tmp_path / "question.jsonl"


def test_answers_roundtrip_fastchat_and_drop_a_cut_last_line(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", [FASTCHAT_ANSWER])
    (a,) = load_answers(p)
    assert a.model_id == "vicuna-7b" and a.choices[0].turns[1] == "White flakes drift."
    ours = Answer(question_id=82, answer_id="x", model_id="m", tstamp=1.0, choices=[Choice(index=0, turns=["a", "b"])])
    write_answers(p, [a, ours])
    with open(p, "a") as f:
        f.write('{"question_id": 83, "answer_id": "y", "mod')  # a crash in the middle of an append
    assert [x.question_id for x in load_answers(p)] == [81, 82]
    p.write_text(p.read_text().replace('"answer_id": "x"', '"answer_id": 5', 1) + "\n")
    with pytest.raises(FusevalError, match=r"a.jsonl:2: field 'answer_id'"):
        load_answers(p)


def test_general_set_shape():
    qs = load_questions(resolve_bench("general"))
    cats = {}
    for q in qs:
        cats.setdefault(q.category, []).append(q)
        assert len(q.turns) == 2
    assert sorted(cats) == sorted(["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem",
                                   "humanities"])
    assert all(len(v) >= 10 for v in cats.values())
    for c in ("math", "reasoning", "coding"):
        assert all(q.reference and len(q.reference) == 2 for q in cats[c])


def test_zoo_set_is_the_test_split_and_its_references_check():
    on_disk = load_questions(resolve_bench("zoo"))
    assert [q.model_dump() for q in on_disk] == [q.model_dump() for q in zoo_questions()]  # file is up to date
    assert {q.category for q in on_disk} == set(domains.DOMAINS)
    by_id = {q.question_id: q for q in on_disk}
    for d, name in enumerate(sorted(domains.DOMAINS), 1):
        for k, conv in enumerate(domains.generate(name, 20, 0, "test", unique=True)):
            q = by_id[1000 * d + k + 1]
            assert q.turns == conv.prompt_turns() and domains.split_of(q.turns[0]) == "test"
            assert domains.check(conv, q.reference) == [True, True]  # the references are right answers


def test_a_worlds_test_set_becomes_a_bench_whose_checks_pass_its_references(tmp_path):
    from fusion.conversations import save_conversations
    from harness.formats.zoo import write_world_bench
    from harness.judges.programmatic import judge_turns

    convs = [c for name in ("code", "formatting") for c in domains.generate(name, 4, 3, "test", unique=True)]
    save_conversations(convs, tmp_path / "test.jsonl")
    bench = write_world_bench(tmp_path)
    qs = load_questions(resolve_bench(str(bench)))
    numbers = {name: d for d, name in enumerate(sorted(domains.DOMAINS), 1)}
    assert [q.question_id for q in qs] == [1000 * numbers[c.domain] + k % 4 + 1 for k, c in enumerate(convs)]
    assert [q.turns for q in qs] == [c.prompt_turns() for c in convs]
    for q in qs:
        assert [r.passed for r in judge_turns(q.checks, q.reference)] == [True, True]
        assert [r.passed for r in judge_turns(q.checks, ["no idea", "none"])] == [False, False]


def test_take_spread_samples_every_category_in_file_order():
    from harness.formats.questions import Question, take_spread

    qs = [Question(question_id=i, category=c, turns=["q"]) for i, c in enumerate("aaaabbc")]
    assert [q.question_id for q in take_spread(qs, 4)] == [0, 1, 4, 6]  # a0 b4 c6, then a1
    assert [q.question_id for q in take_spread(qs, 2)] == [0, 4]
    assert take_spread(qs, None) == qs and take_spread(qs, 99) == qs
