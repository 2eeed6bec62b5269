"""Programmatic judges: score verifiable answers by rule, fast, deterministic and free.

    check = parse_check({"type": "numeric", "answer": 12})
    check_answer(check, "<think>5 + 7...</think>The sum is 12.")   -> CheckResult(1.0, True, "12 == 12")
    judge_turns([check, None], ["The sum is 12.", "anything"])      -> [CheckResult(...), None]
    ProgrammaticJudge().single([SingleItem(question, answer_turns, turn=1)])  -> [Verdict(score=1.0, ...)]

A question carries `checks`, one per turn (their kinds and parsing: `harness.formats.checks`). Code
checks run the answer's program with the check's tests in `harness.judges.sandbox`.

Scores are 1.0 or 0.0. A score of None means the check itself could not be evaluated (the sandbox did
not start): that is a judge failure, reported as missing, never as a wrong answer. Reasoning blocks
(`<think>...</think>`) are removed before checking; callers keep the raw answer.
Every judgment record carries PROGRAMMATIC_VERSION; bump it whenever a rule below changes meaning.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fusion.common.errors import FusevalError
from fusion.common.hashing import digest
from harness.formats.checks import Check, CodeCheck, ExactCheck, FormatCheck, NumericCheck, RegexCheck, turn_check
from harness.judges.base import SingleItem, Verdict
from harness.judges.sandbox import run_python
from harness.judges.text import strip_reasoning

PROGRAMMATIC_VERSION = "prog-v1"

# A number as written in prose: -3, +4, 1,234 (thousands groups), 3.5, .25, 1e-3. A sign counts only
# where no word character precedes it, so "3-5" reads as 3 and 5; "1.2.3" reads as 1.2 only.
_NUMBER_RE = re.compile(r"""
    (?:(?<![\w.])[-+])?                                  # sign
    (?<![\d.])                                           # not the tail of another number
    (?: (?:\d{1,3}(?:,\d{3})+(?!\d) | \d+) (?:\.\d+)? | \.\d+ )
    (?:[eE][-+]?\d+)?                                     # exponent
""", re.VERBOSE)
_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


@dataclass
class CheckResult:
    """The verdict of one check on one answer turn."""

    score: float | None  # 1.0 or 0.0; None when the check could not be evaluated (a judge failure)
    passed: bool | None
    detail: str


def _ok(detail: str) -> CheckResult:
    return CheckResult(1.0, True, detail)


def _fail(detail: str) -> CheckResult:
    return CheckResult(0.0, False, detail)


def _normalize(s: str, strip_punctuation: bool) -> str:
    return s.strip().rstrip(".").strip() if strip_punctuation else s


def _check_exact(c: ExactCheck, text: str) -> CheckResult:
    core = text
    if c.extract is not None:
        m = re.search(c.extract, text, re.DOTALL)
        if m is None:
            return _fail(f"extract pattern {c.extract!r} did not match")
        core = m.group(1) or ""
    got, want = _normalize(core, c.strip_punctuation), _normalize(c.answer, c.strip_punctuation)
    if not c.case_sensitive:
        got, want = got.casefold(), want.casefold()
    return _ok(f"{got!r} == {want!r}") if got == want else _fail(f"{got[:200]!r} != {want!r}")


def _to_float(s: str) -> float:
    return float(s.replace(",", "").lstrip("+"))


def _check_numeric(c: NumericCheck, text: str) -> CheckResult:
    if c.extract is not None:
        m = re.search(c.extract, text, re.DOTALL)
        if m is None:
            return _fail(f"extract pattern {c.extract!r} did not match")
        core = (m.group(1) or "").strip()
        if not _NUMBER_RE.fullmatch(core):
            return _fail(f"{core[:200]!r} is not a number")
    else:
        numbers = _NUMBER_RE.findall(text)
        if not numbers:
            return _fail("no number in the answer")
        core = numbers[-1]
    x = _to_float(core)
    allowed = max(c.tolerance, c.relative * abs(c.answer))
    if abs(x - c.answer) <= allowed:
        return _ok(f"{core} == {c.answer:g} (within {allowed:g})")
    return _fail(f"{core} != {c.answer:g} (off by {abs(x - c.answer):g}, tolerance {allowed:g})")


def _check_regex(c: RegexCheck, text: str) -> CheckResult:
    found = re.search(c.pattern, text, c.flags()) is not None
    if found == c.must_match:
        return _ok(f"pattern {c.pattern!r} {'found' if found else 'absent'}")
    return _fail(f"pattern {c.pattern!r} {'found' if found else 'not found'}")


def _parses_as_json(text: str) -> bool:
    s = text.strip()
    fence = re.fullmatch(r"```[ \t]*(?:json)?[ \t]*\n(.*?)\n?```", s, re.DOTALL | re.IGNORECASE)
    try:
        json.loads(fence.group(1) if fence else s)
    except ValueError:
        return False
    return True


def _check_format(c: FormatCheck, text: str) -> CheckResult:
    s = text.strip()
    words, chars, lines = len(s.split()), len(s), sum(1 for ln in s.splitlines() if ln.strip())
    problems = []
    if c.max_words is not None and words > c.max_words:
        problems.append(f"{words} words > {c.max_words}")
    if c.min_words is not None and words < c.min_words:
        problems.append(f"{words} words < {c.min_words}")
    if c.max_chars is not None and chars > c.max_chars:
        problems.append(f"{chars} chars > {c.max_chars}")
    if c.min_chars is not None and chars < c.min_chars:
        problems.append(f"{chars} chars < {c.min_chars}")
    if c.uppercase is not None and s.isupper() != c.uppercase:
        problems.append("not upper case" if c.uppercase else "upper case")
    if c.json_ is not None and _parses_as_json(s) != c.json_:
        problems.append("not valid JSON" if c.json_ else "is JSON")
    if c.lines is not None and lines != c.lines:
        problems.append(f"{lines} lines != {c.lines}")
    return _fail("; ".join(problems)) if problems else _ok("all format constraints hold")


def extract_program(text: str) -> str | None:
    """The program in an answer: the LAST ```python (or ```py/```python3) fenced block; failing that the
    last untagged fenced block; failing that the whole text if it parses as Python; else None.
    The last block, because answers often show a draft or an example before the final version."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]
    for wanted in (("python", "py", "python3"), ("",)):
        chosen = [body for lang, body in blocks if lang in wanted]
        if chosen:
            return chosen[-1]
    if blocks:
        return None  # only blocks in other languages
    try:
        ast.parse(text)
    except SyntaxError:
        return None
    return text


def _failure_detail(stderr: str, program: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else "no error output"
    where = ""
    for ln in reversed(lines):
        m = re.match(r'\s*File "main\.py", line (\d+)', ln)
        if m:
            n = int(m.group(1))
            src = program.splitlines()
            where = f" at line {n}: {src[n - 1].strip()}" if 0 < n <= len(src) else f" at line {n}"
            break
    kind = "assertion failed" if last.startswith("AssertionError") else "error"
    return f"{kind}{where}: {last[:300]}"


def _check_code(c: CodeCheck, text: str) -> CheckResult:
    program = extract_program(text)
    if program is None:
        return _fail("no Python code found in the answer")
    try:
        ast.parse(program)
    except SyntaxError as e:
        return _fail(f"syntax error in the answer's code: line {e.lineno}: {e.msg}")
    entry = ""
    if c.entry:
        entry = f"\nif {c.entry!r} not in globals():\n    raise SystemExit('entry {c.entry} is not defined')\n"
    source = f"{program}\n\n# --- tests ---\n{entry}{c.tests}\n"
    try:
        r = run_python(source, timeout_s=c.timeout_s, memory_mb=c.memory_mb)
    except OSError as e:
        return CheckResult(None, None, f"sandbox failed to start: {e}")
    if r.timed_out:
        return _fail(f"timed out after {c.timeout_s:g} s")
    if r.memory_exceeded:
        return _fail(f"memory limit exceeded ({c.memory_mb} MiB)")
    if r.output_exceeded:
        return _fail("output limit exceeded")
    if r.returncode == 0:
        return _ok(f"tests passed in {r.wall_s:.2f} s")
    if r.returncode < 0:
        return _fail(f"killed by signal {-r.returncode}")
    return _fail(_failure_detail(r.stderr, source))


_DISPATCH = {ExactCheck: _check_exact, NumericCheck: _check_numeric, RegexCheck: _check_regex,
             FormatCheck: _check_format, CodeCheck: _check_code}


def check_answer(check: Check, text: str, reasoning_tags: tuple[str, ...] = ("think", "reasoning")) -> CheckResult:
    """The verdict of one check on one answer text (reasoning blocks stripped first)."""
    return _DISPATCH[type(check)](check, strip_reasoning(text, reasoning_tags))


def judge_turns(checks: list[Check | None], answer_turns: list[str]) -> list[CheckResult | None]:
    """One verdict per turn (None where the turn has no check)."""
    if len(checks) != len(answer_turns):
        raise FusevalError(f"{len(checks)} checks for {len(answer_turns)} answer turns; "
                           "give one check (or null) per turn")
    return [None if c is None else check_answer(c, a) for c, a in zip(checks, answer_turns)]


class ProgrammaticJudge:
    """The judge (see `harness.judges.base.Judge`) for turns that carry a check: scores 1.0 or 0.0."""

    def __init__(self, reasoning_tags: tuple[str, ...] = ("think", "reasoning")):
        self.reasoning_tags = reasoning_tags
        self.id = f"programmatic/{PROGRAMMATIC_VERSION}"

    def applies(self, question: Any, turn: int) -> bool:
        return turn_check(question, turn) is not None

    def ref_version(self, question: Any, turn: int) -> str | None:
        check = turn_check(question, turn)
        return None if check is None else digest("check", check.model_dump(mode="json", by_alias=True))

    def single(self, items: list[SingleItem], on_done: Callable[[int], None] | None = None) -> list[Verdict]:
        """One verdict per item; a check that could not run is an error (retried next run), never a 0."""
        out = []
        for it in items:
            check = turn_check(it.question, it.turn)
            if check is None:
                raise FusevalError(f"question {it.question.question_id!r} turn {it.turn} has no check")
            r = check_answer(check, it.answer[it.turn - 1], self.reasoning_tags)
            detail = {"check": check.model_dump(mode="json", by_alias=True), "passed": r.passed, "detail": r.detail}
            out.append(Verdict(score=r.score, prompt_version=PROGRAMMATIC_VERSION, detail=detail,
                               error=r.detail if r.score is None else None))
            if on_done is not None:
                on_done(1)
        return out
