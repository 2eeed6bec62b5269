"""What every judge takes and gives: items to judge in, verdicts out.

A judge has an `id` (its identity in the store: model, prompt version, settings; change any of
them and earlier judgments are not reused) and `single(items)`; LLM judges also have
`pair(items)`. A verdict with `error` set means the judge could not be asked (endpoint down): it is
not stored, so the next run asks again. A verdict whose text could not be read even after a retry
is stored with score/winner None: missing, counted in reports, never scored 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from harness.formats.questions import Question


@dataclass
class SingleItem:
    """Grade `answer[turn - 1]` (earlier turns are context)."""

    question: Question
    answer: list[str]
    turn: int  # 1-based
    repeat: int = 0


@dataclass
class PairItem:
    """Which of two answers to `turn` is better: A's or B's."""

    question: Question
    answer_a: list[str]
    answer_b: list[str]
    turn: int
    repeat: int = 0


@dataclass
class Verdict:
    score: float | None = None          # single: the grade; None = missing
    winner: str | None = None           # pair: 'A', 'B', 'tie'; None = missing
    prompt_version: str = ""
    detail: dict = field(default_factory=dict)
    error: str | None = None            # the judge could not be asked: do not store, retry next run


class Judge(Protocol):
    id: str

    def applies(self, question: Question, turn: int) -> bool:
        """Whether this judge grades that turn at all (programmatic judges need a check)."""

    def ref_version(self, question: Question, turn: int) -> str | None:
        """The version of whatever the verdict depends on besides the answer (reference, check)."""

    def single(self, items: list[SingleItem], on_done: Callable[[int], None] | None = None) -> list[Verdict]:
        """One verdict per item, in order."""


def reference_for(question: Question, turn: int) -> str | None:
    ref = question.reference
    return ref[turn - 1] if ref and turn <= len(ref) and ref[turn - 1] else None
