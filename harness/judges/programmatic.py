"""Programmatic judges: score verifiable answers by rule, fast, deterministic and free.

    check = parse_check({"type": "numeric", "answer": 12})
    check_answer(check, "<think>5 + 7...</think>The sum is 12.")   -> CheckResult(1.0, True, "12 == 12")
    judge_turns([check, None], ["The sum is 12.", "anything"])      -> [CheckResult(...), None]
    ProgrammaticJudge().single([SingleItem(question, answer_turns, turn=1)])  -> [Verdict(score=1.0, ...)]

A question carries `checks`: one check spec per turn (None for a turn without one). Kinds, chosen by
`type`: exact (string equality of an extracted core), numeric (a number within tolerance), regex (a
pattern must or must not match), format (length, case, JSON, line-count constraints) and code (the
answer's program runs with the check's tests in `harness.judges.sandbox`).

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
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from fusion.common.errors import FusevalError
from harness.judges.sandbox import run_python

if TYPE_CHECKING:  # base imports harness.bench; importing it lazily lets harness.bench import Check from here
    from harness.judges.base import SingleItem, Verdict

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


def _compile(pattern: str, flags: int = 0, groups: int | None = None) -> re.Pattern:
    try:
        rx = re.compile(pattern, flags)
    except re.error as e:
        raise ValueError(f"invalid regex {pattern!r}: {e}") from None
    if groups is not None and rx.groups != groups:
        raise ValueError(f"regex {pattern!r} must have exactly {groups} group, not {rx.groups}")
    return rx


def _one_group_regex(v: str | None) -> str | None:
    if v is not None:
        _compile(v, re.DOTALL, groups=1)
    return v


_Extract = Annotated[Optional[str], AfterValidator(_one_group_regex)]


class _CheckBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExactCheck(_CheckBase):
    """The answer (or the core that `extract` pulls out of it) equals `answer` exactly."""

    type: Literal["exact"] = Field("exact", description="Discriminator: exact string match.")
    answer: str = Field(description="The expected core.")
    extract: _Extract = Field(None, description="Regex with one group, searched (DOTALL) in the answer; "
                                                "the group is the core.")
    case_sensitive: bool = Field(True, description="Compare case-sensitively.")
    strip_punctuation: bool = Field(True, description="Ignore surrounding whitespace and trailing full stops.")


class NumericCheck(_CheckBase):
    """The answer's number is within tolerance of `answer`: |x - answer| <= max(tolerance, relative*|answer|)."""

    type: Literal["numeric"] = Field("numeric", description="Discriminator: numeric match.")
    answer: float = Field(allow_inf_nan=False, description="The expected value.")
    tolerance: float = Field(1e-6, ge=0, description="Absolute tolerance.")
    relative: float = Field(0.0, ge=0, description="Tolerance relative to |answer|; the larger of the two applies.")
    extract: _Extract = Field(None, description="Regex with one group, searched (DOTALL); the group must be one "
                                                "number. Default: the last number in the text.")


class RegexCheck(_CheckBase):
    """A pattern must (or must not) be found in the answer."""

    type: Literal["regex"] = Field("regex", description="Discriminator: regex search.")
    pattern: str = Field(description="Python regex, searched anywhere in the answer.")
    must_match: bool = Field(True, description="True: the pattern must be found; False: it must not be.")
    ignore_case: bool = Field(False, description="re.IGNORECASE.")
    multiline: bool = Field(False, description="re.MULTILINE: ^ and $ match at every line.")
    dotall: bool = Field(False, description="re.DOTALL: '.' matches newlines too.")

    @model_validator(mode="after")
    def _pattern_ok(self) -> RegexCheck:
        _compile(self.pattern, self.flags())
        return self

    def flags(self) -> int:
        return (re.IGNORECASE * self.ignore_case) | (re.MULTILINE * self.multiline) | (re.DOTALL * self.dotall)


class FormatCheck(_CheckBase):
    """Every given constraint on the answer's shape holds (at least one must be given)."""

    type: Literal["format"] = Field("format", description="Discriminator: format constraints.")
    max_words: int | None = Field(None, ge=0, description="At most this many whitespace-separated words.")
    min_words: int | None = Field(None, ge=0, description="At least this many words.")
    max_chars: int | None = Field(None, ge=0, description="At most this many characters (whitespace around excluded).")
    min_chars: int | None = Field(None, ge=0, description="At least this many characters.")
    uppercase: bool | None = Field(None, description="True: all cased letters upper case, at least one; False: not so.")
    json_: bool | None = Field(None, alias="json", description="True: parses as JSON (a lone ```json fenced block "
                                                               "counts); False: does not.")
    lines: int | None = Field(None, ge=0, description="Exactly this many non-empty lines.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> FormatCheck:
        given = [k for k in ("max_words", "min_words", "max_chars", "min_chars", "uppercase", "json_", "lines")
                 if getattr(self, k) is not None]
        if not given:
            raise ValueError("a format check needs at least one constraint")
        for lo, hi in (("min_words", "max_words"), ("min_chars", "max_chars")):
            low, high = getattr(self, lo), getattr(self, hi)
            if low is not None and high is not None and low > high:
                raise ValueError(f"{lo} ({low}) is greater than {hi} ({high})")
        return self


class CodeCheck(_CheckBase):
    """The answer's Python program, followed by `tests`, runs in the sandbox and exits with status 0."""

    type: Literal["code"] = Field("code", description="Discriminator: run the answer's code with tests.")
    tests: str = Field(min_length=1, description="Python code (asserts) appended after the answer's program.")
    entry: str | None = Field(None, description="A name the program must define (e.g. the function under test).")
    timeout_s: float = Field(5.0, gt=0, le=600, description="Wall-clock limit for the whole run, seconds.")
    memory_mb: int = Field(256, ge=64, description="Address-space limit, MiB (the interpreter itself needs ~30).")

    @field_validator("tests")
    @classmethod
    def _tests_compile(cls, v: str) -> str:
        try:
            ast.parse(v)
        except SyntaxError as e:
            raise ValueError(f"tests do not parse: line {e.lineno}: {e.msg}") from None
        return v

    @field_validator("entry")
    @classmethod
    def _entry_ok(cls, v: str | None) -> str | None:
        if v is not None and not v.isidentifier():
            raise ValueError(f"entry {v!r} is not a Python identifier")
        return v


Check = Annotated[Union[ExactCheck, NumericCheck, RegexCheck, FormatCheck, CodeCheck], Field(discriminator="type")]
_CHECK_ADAPTER: TypeAdapter = TypeAdapter(Check)


def parse_check(obj: Any, where: str = "check") -> Check:
    """A validated check from a dict (e.g. one entry of a question's `checks`); FusevalError names the field."""
    try:
        return _CHECK_ADAPTER.validate_python(obj)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:
            raise FusevalError(f"{where}: {msg}") from None
        if err["type"].startswith("union_tag"):
            raise FusevalError(f"{where}: field 'type': {msg}") from None
        tag, field = err["loc"][0], ".".join(str(p) for p in err["loc"][1:])
        raise FusevalError(f"{where}: {tag} check" + (f", field {field!r}" if field else "") + f": {msg}") from None


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


def strip_reasoning(text: str, tags: tuple[str, ...] = ("think", "reasoning")) -> str:
    """The answer without reasoning blocks: `<think>...</think>` removed; an unclosed opening tag drops
    everything after it; a closing tag with no opening one (the template opened it) drops everything before it."""
    for tag in tags:
        t = re.escape(tag)
        text = re.sub(rf"<{t}\b[^>]*>.*?</{t}\s*>\s*", "", text, flags=re.DOTALL | re.IGNORECASE)
        opened = re.search(rf"<{t}\b[^>]*>", text, flags=re.IGNORECASE)
        if opened:
            text = text[:opened.start()]
        closed = list(re.finditer(rf"</{t}\s*>\s*", text, flags=re.IGNORECASE))
        if closed:
            text = text[closed[-1].end():]
    return text


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


def turn_check(question: Any, turn: int) -> Check | None:
    """The check of a question's turn (1-based) from its `checks`, parsed if still plain data; None if none."""
    checks = getattr(question, "checks", None) or []
    spec = checks[turn - 1] if turn <= len(checks) else None
    if spec is None or isinstance(spec, _CheckBase):
        return spec
    return parse_check(spec, where=f"question {question.question_id!r}, checks[{turn - 1}]")


class ProgrammaticJudge:
    """The judge (see `harness.judges.base.Judge`) for turns that carry a check: scores 1.0 or 0.0."""

    def __init__(self, reasoning_tags: tuple[str, ...] = ("think", "reasoning")):
        self.reasoning_tags = reasoning_tags
        self.id = f"programmatic/{PROGRAMMATIC_VERSION}"

    def applies(self, question: Any, turn: int) -> bool:
        return turn_check(question, turn) is not None

    def ref_version(self, question: Any, turn: int) -> str | None:
        from fusion.common.hashing import digest

        check = turn_check(question, turn)
        return None if check is None else digest("check", check.model_dump(mode="json", by_alias=True))

    def single(self, items: list[SingleItem], on_done: Callable[[int], None] | None = None) -> list[Verdict]:
        """One verdict per item; a check that could not run is an error (retried next run), never a 0."""
        from harness.judges.base import Verdict

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


def _phrase_extract(domain: str, turn: int) -> str:
    """A one-group regex for a zoo answer's core: the domain's phrase around it, the final '.' optional.

    Mirrors `fusion.zoo.domains.extract_core`: the text without the phrase is taken whole, as the core."""
    from fusion.zoo.domains import DOMAINS

    before, _, after = DOMAINS[domain].phrase("\0", turn).partition("\0")
    after = after.rstrip(".")
    head = f"(?:{re.escape(before)})?" if before else ""
    tail = f"(?:{re.escape(after)})?" if after else ""
    return rf"\A\s*{head}(.*?){tail}\.*\s*\Z"


def domain_checks(domain: str, cores: list[str]) -> list[Check]:
    """The checks for a zoo conversation of `domain` whose exact answer cores are `cores` (one per turn)."""
    from fusion.zoo.domains import DOMAINS

    if domain not in DOMAINS:
        raise FusevalError(f"unknown domain {domain!r}; choose from {sorted(DOMAINS)}")
    out: list[Check] = []
    for turn, core in enumerate(cores):
        if domain in ("arithmetic", "comparison"):
            out.append(NumericCheck(answer=float(core), tolerance=0.0, extract=_phrase_extract(domain, turn)))
        elif domain in ("extraction", "code"):
            out.append(ExactCheck(answer=core, extract=_phrase_extract(domain, turn)))
        else:
            out.append(ExactCheck(answer=core))
    return out
