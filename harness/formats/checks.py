"""Programmatic checks as data: the check kinds a question may carry, validated, and how to read them.

    check = parse_check({"type": "numeric", "answer": 12})         # NumericCheck(answer=12.0, ...)
    turn_check(question, turn=1)                                   # the check of a question's turn, or None

A question carries `checks`: one check spec per turn (None for a turn without one). Kinds, chosen by
`type`: exact (string equality of an extracted core), numeric (a number within tolerance), regex (a
pattern must or must not match), format (length, case, JSON, line-count constraints) and code (the
answer's program runs with the check's tests). This module is the schema only; it imports nothing
else of harness, so the question format can use it. Checks are evaluated by
`harness.judges.programmatic`.
"""

from __future__ import annotations

import ast
import re
from typing import Annotated, Any, Literal

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


_Extract = Annotated[str | None, AfterValidator(_one_group_regex)]


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


Check = Annotated[ExactCheck | NumericCheck | RegexCheck | FormatCheck | CodeCheck, Field(discriminator="type")]
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



def turn_check(question: Any, turn: int) -> Check | None:
    """The check of a question's turn (1-based) from its `checks`, parsed if still plain data; None if none."""
    checks = getattr(question, "checks", None) or []
    spec = checks[turn - 1] if turn <= len(checks) else None
    if spec is None or isinstance(spec, ExactCheck | NumericCheck | RegexCheck | FormatCheck | CodeCheck):
        return spec
    return parse_check(spec, where=f"question {question.question_id!r}, checks[{turn - 1}]")


