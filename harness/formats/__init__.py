"""File formats: question sets and answers (FastChat MT-Bench), programmatic checks, FastChat judgments.

    questions = load_questions(resolve_bench("general"))
    check = parse_check({"type": "numeric", "answer": 12})

Modules: `questions` (question.jsonl and answer files), `checks` (the check kinds a question carries),
`fastchat` (FastChat's judgment files and data directories), `exchange` (the store to and from
FastChat files), `zoo` (the tiny zoo as a question set).
"""

from harness.formats.checks import Check, parse_check, turn_check
from harness.formats.questions import (
    BUILTIN,
    Answer,
    Choice,
    Question,
    append_answers,
    load_answers,
    load_questions,
    read_jsonl,
    resolve_bench,
    take_spread,
    write_answers,
    write_questions,
)

__all__ = ["BUILTIN", "Answer", "Check", "Choice", "Question", "append_answers", "load_answers", "load_questions",
           "parse_check", "read_jsonl", "resolve_bench", "take_spread", "turn_check", "write_answers",
           "write_questions"]
