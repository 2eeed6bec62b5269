"""Question sets and answer files in FastChat's MT-Bench formats.

    questions = load_questions(resolve_bench("general"))   # or a path to FastChat's question.jsonl
    answers = load_answers("answers.jsonl")                 # {question_id: Answer}

question.jsonl: one object per line, `question_id`, `category`, `turns` (the user messages) and an
optional `reference` (one reference answer per turn). Answer files: `question_id`, `answer_id`,
`model_id`, `choices: [{index, turns}]` (one choice per sample), `tstamp`. Keys beyond these are
kept, so files written by other tools load, and our own extra keys do not disturb FastChat.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from fusion.common.errors import FusevalError
from fusion.common.files import atomic_write_text
from harness.formats.checks import Check, parse_check

BENCHMARKS_DIR = Path(os.environ.get("FUSEVAL_BENCHMARKS", Path(__file__).resolve().parents[2] / "benchmarks"))
# Built-in sets by name: benchmarks/<name>/question.jsonl.
BUILTIN = ("general", "zoo")


def _scalar_id(v: Any) -> Any:
    if v is None or isinstance(v, (dict, list)):
        raise ValueError(f"must be an integer or a string, not {'null' if v is None else type(v).__name__}")
    return v


# One message for an id of the wrong kind, rather than one per alternative ("question_id.int", "question_id.str").
QuestionId = Annotated[int | str, BeforeValidator(_scalar_id)]


class Question(BaseModel):
    """One multi-turn question; later turns build on the model's earlier answers."""

    model_config = ConfigDict(extra="allow")

    question_id: QuestionId = Field(description="Unique id within the set (FastChat uses integers).")
    category: str = Field(min_length=1, description="Category; picks the default temperature and the judge prompt.")
    turns: list[str] = Field(min_length=1, description="The user messages, in order.")
    reference: list[str] | None = Field(None, description="Reference answers, one per turn, where the category has "
                                                          "them.")
    checks: list[Check | None] | None = Field(None, description="Programmatic checks, one per turn (null for a turn "
                                              "without): see harness.formats.checks.")

    @field_validator("checks", mode="before")
    @classmethod
    def _parse_checks(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        try:
            return [None if c is None else parse_check(c, where=f"checks[{k}]") for k, c in enumerate(v)]
        except FusevalError as e:
            raise ValueError(str(e)) from None

    @field_validator("turns")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if any(not t.strip() for t in v):
            raise ValueError("a turn is empty")
        return v


class Choice(BaseModel):
    """One sampled answer: the assistant's text for each turn."""

    model_config = ConfigDict(extra="allow")

    index: int = Field(ge=0, description="The sample number.")
    turns: list[str] = Field(description="The answer to each turn.")


class Answer(BaseModel):
    """A model's answers to one question (FastChat model_answer format)."""

    model_config = ConfigDict(extra="allow")

    question_id: QuestionId
    answer_id: str
    model_id: str
    choices: list[Choice] = Field(min_length=1)
    tstamp: float


def _field_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "record"
    return f"field {where!r}: {err['msg']}"


def read_jsonl(path: str | Path, model: type[BaseModel], drop_truncated_tail: bool = False) -> list[Any]:
    """Validated records of a JSONL file; a bad line is a one-line error naming file, line and field.

    drop_truncated_tail: a last line without its newline that does not parse is taken as a write cut
    short by a crash and dropped (append-only files written by `harness.run.generate`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FusevalError(f"{path}: no such file") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise FusevalError(f"{path}: cannot read as UTF-8 text ({e.__class__.__name__})") from None
    lines = text.split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            if drop_truncated_tail and n == len(lines) and not text.endswith("\n"):
                break
            raise FusevalError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(data, dict):
            raise FusevalError(f"{path}:{n}: expected a JSON object, got {type(data).__name__}")
        try:
            out.append(model.model_validate(data))
        except ValidationError as e:
            raise FusevalError(f"{path}:{n}: {_field_error(e)}") from None
    return out


def load_questions(path: str | Path) -> list[Question]:
    """The questions of a question.jsonl file, checked (ids unique, references one per turn)."""
    questions = read_jsonl(path, Question)
    seen: set = set()
    for q in questions:
        if q.question_id in seen:
            raise FusevalError(f"{path}: question_id {q.question_id!r} appears twice")
        seen.add(q.question_id)
        if q.reference is not None and len(q.reference) != len(q.turns):
            raise FusevalError(f"{path}: question {q.question_id!r} has {len(q.turns)} turns but "
                               f"{len(q.reference)} references")
        if q.checks is not None and len(q.checks) != len(q.turns):
            raise FusevalError(f"{path}: question {q.question_id!r} has {len(q.turns)} turns but "
                               f"{len(q.checks)} checks (write null for a turn without one)")
    if not questions:
        raise FusevalError(f"{path}: no questions")
    return questions


def _jsonl(records: Sequence[BaseModel]) -> str:
    return "".join(json.dumps(r.model_dump(mode="json", exclude_none=True), ensure_ascii=False) + "\n"
                   for r in records)


def write_questions(path: str | Path, questions: list[Question]) -> None:
    atomic_write_text(path, _jsonl(questions))


def load_answers(path: str | Path) -> list[Answer]:
    """Answer records (FastChat model_answer); a crash-truncated last line is dropped."""
    return read_jsonl(path, Answer, drop_truncated_tail=True)


def write_answers(path: str | Path, answers: list[Answer]) -> None:
    atomic_write_text(path, _jsonl(answers))


def append_answers(path: str | Path, answers: list[Answer]) -> None:
    """Append records, each line in one write and synced, so a crash leaves at most one cut line."""
    if not answers:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(_jsonl(answers))
        f.flush()
        os.fsync(f.fileno())


def resolve_bench(name_or_path: str | Path) -> Path:
    """A question file: a built-in set's name, a question.jsonl path, or a directory holding one."""
    if str(name_or_path) in BUILTIN:
        return BENCHMARKS_DIR / str(name_or_path) / "question.jsonl"
    p = Path(name_or_path)
    if p.is_dir():
        p = p / "question.jsonl"
    if not p.exists():
        raise FusevalError(f"{name_or_path}: no such question set; give a path to a question.jsonl "
                           f"(or a directory holding one) or a built-in name: {', '.join(BUILTIN)}")
    return p


def take_spread(questions: list[Question], limit: int | None) -> list[Question]:
    """The first `limit` questions taken across categories in turn (file order kept), so a limit samples
    every category rather than the first one in the file."""
    if limit is None or limit >= len(questions):
        return questions
    by_cat: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        by_cat.setdefault(q.category, []).append(i)
    picked: list[int] = []
    for rank in range(max(map(len, by_cat.values()))):
        picked += [ix[rank] for ix in by_cat.values() if rank < len(ix)]
    return [questions[i] for i in sorted(picked[:limit])]
