"""FastChat llm_judge files: judgments to read and write, and whole data directories to load.

    data = load_fastchat_dir("FastChat")       # a checkout, its data/ directory, or data/<bench>
    bench = data.bench("mt_bench")             # or data.bench() when there is only one
    grades = read_single_judgments("data/mt_bench/model_judgment/gpt-4_single.jsonl")

FastChat's layout (gen_model_answer.py, gen_judgment.py):

    data/<bench>/question.jsonl
    data/<bench>/model_answer/<model>.jsonl            answers; the file name is the model's name
    data/<bench>/reference_answer/<judge>.jsonl        reference answers (answer format), per judge model
    data/<bench>/model_judgment/<judge>_single.jsonl   single-answer grades, one line per question/model/turn
    data/<bench>/model_judgment/<judge>_pair.jsonl     pairwise verdicts, both orders in one line

Its judges write a grade of -1, and a winner "error", when the verdict could not be parsed; here a
-1 grade reads as None (missing, never a score) and None is written back as -1, so files stay
readable by FastChat's show_result.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fusion.common.errors import FusevalError
from fusion.common.files import atomic_write_text
from harness.formats.questions import Answer, Question, QuestionId, load_answers, load_questions, read_jsonl

log = logging.getLogger(__name__)

Winner = Literal["model_1", "model_2", "tie", "error"]
Outcome = Literal["model_1", "model_2", "tie"]
WINNERS: tuple[str, ...] = ("model_1", "model_2", "tie", "error")
SINGLE_SUFFIX = "_single.jsonl"
PAIR_SUFFIX = "_pair.jsonl"
MISSING_SCORE = -1  # FastChat's "could not parse" grade


class SingleJudgment(BaseModel):
    """One single-answer grade (a line of FastChat's `<judge>_single.jsonl`)."""

    model_config = ConfigDict(extra="allow")

    question_id: QuestionId = Field(description="The question graded.")
    model: str = Field(description="The model whose answer was graded (its answer file's name).")
    judge: tuple[str, str] = Field(description="[judge model, judge prompt name], e.g. ['gpt-4', 'single-v1'].")
    user_prompt: str = Field(description="The prompt the judge was sent.")
    judgment: str = Field(description="The judge's raw output.")
    score: int | float | None = Field(description="The grade; None when it could not be parsed (-1 in the file).")
    turn: int = Field(ge=1, description="The turn graded: 1, or 2 for the multi-turn judge that sees both turns.")
    tstamp: float | None = Field(None, description="Unix time of the judgment.")

    @field_validator("score", mode="before")
    @classmethod
    def _minus_one_is_missing(cls, v: object) -> object:
        return None if not isinstance(v, bool) and v == MISSING_SCORE else v


class PairJudgment(BaseModel):
    """One pairwise comparison in both orders (a line of FastChat's `<judge>_pair.jsonl`).

    Game 1 shows model_1's answer as Assistant A; game 2 swaps the order (model_2 as A). FastChat maps
    both games' A/B back to model names, so g1_winner and g2_winner agree when the judge is consistent.
    """

    model_config = ConfigDict(extra="allow")

    question_id: QuestionId = Field(description="The question compared.")
    model_1: str = Field(description="The first model (Assistant A in game 1).")
    model_2: str = Field(description="The second model (Assistant A in game 2).")
    g1_winner: Winner = Field(description="Game 1's winner: model_1, model_2, tie, or error (unparsed).")
    g2_winner: Winner = Field(description="Game 2's winner, already mapped back to model_1/model_2.")
    judge: tuple[str, str] = Field(description="[judge model, judge prompt name], e.g. ['gpt-4', 'pair-v2'].")
    g1_user_prompt: str = Field(description="The prompt of game 1.")
    g1_judgment: str = Field(description="The judge's raw output in game 1.")
    g2_user_prompt: str = Field(description="The prompt of game 2.")
    g2_judgment: str = Field(description="The judge's raw output in game 2.")
    turn: int | None = Field(None, ge=1, description="The turn compared (absent in FastChat's single-grade pair mode).")
    tstamp: float | None = Field(None, description="Unix time of the judgment.")

    @property
    def outcome(self) -> Outcome | None:
        """The verdict over both orders; see `pair_outcome`."""
        return pair_outcome(self.g1_winner, self.g2_winner)


def pair_outcome(g1_winner: str, g2_winner: str) -> Outcome | None:
    """The verdict with both answer orders: the winner if both games agree, 'tie' if either game is a
    tie or the winner flips with the order, None (missing) if either game is an error."""
    for w in (g1_winner, g2_winner):
        if w not in WINNERS:
            raise ValueError(f"unknown winner {w!r}; expected one of {', '.join(WINNERS)}")
    if "error" in (g1_winner, g2_winner):
        return None
    return g1_winner if g1_winner == g2_winner else "tie"  # type: ignore[return-value]


def read_single_judgments(path: str | Path) -> list[SingleJudgment]:
    """The grades of a `<judge>_single.jsonl`; a crash-truncated last line (FastChat appends) is dropped."""
    return read_jsonl(path, SingleJudgment, drop_truncated_tail=True)


def read_pair_judgments(path: str | Path) -> list[PairJudgment]:
    """The verdicts of a `<judge>_pair.jsonl`; a crash-truncated last line is dropped."""
    return read_jsonl(path, PairJudgment, drop_truncated_tail=True)


def _line(record: SingleJudgment | PairJudgment) -> str:
    data = record.model_dump(mode="json")
    if isinstance(record, SingleJudgment) and record.score is None:
        data["score"] = MISSING_SCORE
    for key in ("turn", "tstamp"):  # optional here, absent rather than null in FastChat's files
        if data.get(key, 0) is None:
            del data[key]
    return json.dumps(data, ensure_ascii=False) + "\n"


def write_single_judgments(path: str | Path, records: list[SingleJudgment]) -> None:
    """Write grades atomically in FastChat's format, a missing score as -1."""
    atomic_write_text(path, "".join(_line(r) for r in records))


def write_pair_judgments(path: str | Path, records: list[PairJudgment]) -> None:
    """Write pairwise verdicts atomically in FastChat's format."""
    atomic_write_text(path, "".join(_line(r) for r in records))


@dataclass
class FastChatBench:
    """One benchmark directory, `data/<bench>`, as loaded."""

    name: str
    path: Path
    questions: list[Question]
    answers: dict[str, list[Answer]] = field(default_factory=dict)  # by model (answer file name)
    references: dict[str, list[Answer]] = field(default_factory=dict)  # by judge model (file name)
    single: dict[str, list[SingleJudgment]] = field(default_factory=dict)  # by judge (file name less _single)
    pair: dict[str, list[PairJudgment]] = field(default_factory=dict)  # by judge (file name less _pair)
    files: list[Path] = field(default_factory=list)  # every file read, in order


@dataclass
class FastChatData:
    """Everything loaded from a FastChat data directory: one or more benches."""

    root: Path
    benches: dict[str, FastChatBench]

    @property
    def files(self) -> list[Path]:
        return [f for b in self.benches.values() for f in b.files]

    def bench(self, name: str | None = None) -> FastChatBench:
        """The bench called `name`, or the only one when `name` is None."""
        if name is None and len(self.benches) == 1:
            return next(iter(self.benches.values()))
        if name in self.benches:
            return self.benches[name]
        what = "several benches" if name is None else f"no bench {name!r}"
        raise FusevalError(f"{self.root}: {what}; choose one of: {', '.join(sorted(self.benches))}")


def _jsonl_files(folder: Path, suffix: str = ".jsonl") -> list[Path]:
    return sorted(p for p in folder.glob(f"*{suffix}") if p.is_file()) if folder.is_dir() else []


def _load_bench(path: Path) -> FastChatBench:
    bench = FastChatBench(name=path.name, path=path, questions=load_questions(path / "question.jsonl"))
    bench.files.append(path / "question.jsonl")
    for sub, into in (("model_answer", bench.answers), ("reference_answer", bench.references)):
        for f in _jsonl_files(path / sub):
            into[f.name.removesuffix(".jsonl")] = load_answers(f)
            bench.files.append(f)
    for f in _jsonl_files(path / "model_judgment"):
        if f.name.endswith(SINGLE_SUFFIX):
            bench.single[f.name.removesuffix(SINGLE_SUFFIX)] = read_single_judgments(f)
        elif f.name.endswith(PAIR_SUFFIX):
            bench.pair[f.name.removesuffix(PAIR_SUFFIX)] = read_pair_judgments(f)
        else:
            log.info("%s: not a <judge>_single.jsonl or <judge>_pair.jsonl file; skipped", f)
            continue
        bench.files.append(f)
    return bench


def _bench_dirs(data_dir: Path) -> list[Path]:
    return sorted(d for d in data_dir.iterdir() if d.is_dir() and (d / "question.jsonl").is_file())


def load_fastchat_dir(path: str | Path) -> FastChatData:
    """Load FastChat llm_judge data from a bench directory (holding question.jsonl), a data directory
    (holding <bench>/question.jsonl), or a FastChat checkout (fastchat/llm_judge/data).

    Every bench found is loaded: questions (required), all model answer files, and the reference
    answers and judgments where present (a bench not yet judged loads with empty dicts).
    """
    path = Path(path)
    if not path.is_dir():
        raise FusevalError(f"{path}: not a directory; give a FastChat checkout, its data/ directory "
                           "or a data/<bench> directory")
    if (path / "question.jsonl").is_file():
        bench = _load_bench(path)
        return FastChatData(root=path.parent, benches={bench.name: bench})
    for data_dir in (path, path / "data", path / "fastchat" / "llm_judge" / "data"):
        dirs = _bench_dirs(data_dir) if data_dir.is_dir() else []
        if dirs:
            return FastChatData(root=data_dir, benches={d.name: _load_bench(d) for d in dirs})
    raise FusevalError(f"{path}: no FastChat data found: expected question.jsonl here, in <bench>/ below it, "
                       "or in fastchat/llm_judge/data/<bench>/ of a FastChat checkout")
