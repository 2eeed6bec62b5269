"""Programmatic judges: each check kind, reasoning stripping, and agreement with the zoo domains' own check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fusion.common.errors import FusevalError
from fusion.zoo import domains
from harness.formats.checks import CodeCheck, ExactCheck, NumericCheck, parse_check
from harness.formats.zoo import domain_checks
from harness.judges import programmatic as prog
from harness.judges.programmatic import PROGRAMMATIC_VERSION, CheckResult, check_answer, extract_program, judge_turns
from harness.judges.text import strip_reasoning


def test_version_string():
    assert PROGRAMMATIC_VERSION == "prog-v1"


@pytest.mark.parametrize("raw, clean", [
    ("<think>5+7=12</think>The sum is 12.", "The sum is 12."),
    ("<think>a</think>\n\nA <reasoning>b\nc</reasoning>B", "A B"),
    ("<THINK>x</THINK>ok", "ok"),
    ("Answer first. <think>then a cut-off thought", "Answer first. "),
    ("reasoning the template opened</think>\nThe sum is 12.", "The sum is 12."),
    ("no tags at all", "no tags at all"),
])
def test_strip_reasoning(raw, clean):
    assert strip_reasoning(raw) == clean


def test_strip_reasoning_custom_tags():
    assert strip_reasoning("<scratch>x</scratch>y<think>z</think>", tags=("scratch",)) == "y<think>z</think>"


def test_reasoning_is_stripped_before_checking():
    c = NumericCheck(answer=12)
    assert check_answer(c, "<think>maybe 13? no, 99</think>It is 12.").passed
    assert check_answer(c, "It is 12.<think>wait, 13").passed  # the unclosed block is dropped


def test_exact():
    assert check_answer(ExactCheck(answer="Oslo"), "  Oslo. ").passed
    assert not check_answer(ExactCheck(answer="Oslo", strip_punctuation=False), "Oslo.").passed
    assert not check_answer(ExactCheck(answer="Oslo"), "oslo").passed
    assert check_answer(ExactCheck(answer="Oslo", case_sensitive=False), "OSLO").passed
    c = ExactCheck(answer="Oslo", extract=r"city is (\w+)")
    assert check_answer(c, "I am sure the city is Oslo, as the record says.").passed
    r = check_answer(c, "no idea")
    assert (r.score, r.passed) == (0.0, False) and "did not match" in r.detail


@pytest.mark.parametrize("text, value", [
    ("The answer is -3.", -3), ("about 1,234 people", 1234), ("3.5 then 2", 2), ("x = 1e-3", 0.001),
    ("first 7, finally 3.5", 3.5), ("pages 3-5", 5), ("a ratio of .25", 0.25), ("+4 degrees", 4),
    ("values 10,20", 20), ("It is 42.", 42), ("x=-7", -7), ("total:12", 12), ("12,345,678.5 in all", 12345678.5),
])
def test_numeric_reads_the_last_number(text, value):
    assert check_answer(NumericCheck(answer=value), text).passed
    assert not check_answer(NumericCheck(answer=value + 1), text).passed


def test_numeric_tolerances_and_extract():
    assert check_answer(NumericCheck(answer=3.14159, tolerance=0.01), "pi is 3.14").passed
    assert not check_answer(NumericCheck(answer=3.14159), "pi is 3.14").passed
    assert check_answer(NumericCheck(answer=1000, relative=0.01), "995").passed
    assert not check_answer(NumericCheck(answer=1000, relative=0.001), "995").passed
    c = NumericCheck(answer=12, extract=r"total: (\S+)")
    assert check_answer(c, "total: 12 (and 5 more)").passed
    assert "not a number" in check_answer(c, "total: twelve").detail
    r = check_answer(NumericCheck(answer=1), "none here")
    assert r.score == 0.0 and r.detail == "no number in the answer"


def test_regex():
    c = parse_check({"type": "regex", "pattern": r"^\s*def \w+\(", "multiline": True})
    assert check_answer(c, "Here:\ndef f(x):\n  pass").passed
    assert not check_answer(c, "no function").passed
    bad = parse_check({"type": "regex", "pattern": "sorry", "must_match": False, "ignore_case": True})
    assert not check_answer(bad, "Sorry, I cannot").passed
    assert check_answer(bad, "Sure.").passed


def test_format_constraints():
    fc = lambda **kw: parse_check({"type": "format", **kw})  # noqa: E731
    assert check_answer(fc(max_words=3), "one two three").passed
    r = check_answer(fc(max_words=2, uppercase=True), "one two three")
    assert not r.passed and "3 words > 2" in r.detail and "not upper case" in r.detail
    assert check_answer(fc(min_words=2, min_chars=5, max_chars=7), "ab cdef").passed
    assert check_answer(fc(uppercase=True), "RED BLUE 42!").passed
    assert not check_answer(fc(uppercase=True), "123").passed  # no cased letter
    assert check_answer(fc(uppercase=False), "Red").passed
    assert check_answer(fc(json=True), '{"a": [1, 2]}').passed
    assert check_answer(fc(json=True), '```json\n{"a": 1}\n```').passed
    assert not check_answer(fc(json=True), 'Here it is: {"a": 1}').passed
    assert check_answer(fc(json=False), "plain words").passed
    assert check_answer(fc(lines=2), "a\n\n b\n").passed
    assert not check_answer(fc(lines=2), "a").passed


@pytest.mark.parametrize("spec, words", [
    ({"type": "regex", "pattern": "a("}, "invalid regex 'a('"),
    ({"type": "numeric", "answer": 1, "extract": "(a)(b)"}, "exactly 1 group"),
    ({"type": "nope"}, "'type'"),
    ({"answer": "x"}, "'type'"),
    ({"type": "exact", "answer": "x", "answr": "y"}, "'answr'"),
    ({"type": "format"}, "at least one constraint"),
    ({"type": "format", "min_words": 5, "max_words": 2}, "greater than"),
    ({"type": "code", "tests": "assert ("}, "tests do not parse"),
    ({"type": "code", "tests": "pass", "entry": "not a name"}, "identifier"),
    ({"type": "numeric", "answer": "nan"}, "'answer'"),
])
def test_bad_specs_are_errors_that_name_the_field(spec, words):
    with pytest.raises(FusevalError, match="check") as e:
        parse_check(spec)
    assert words in str(e.value)


def test_specs_round_trip_and_are_hashable():
    for spec in [{"type": "exact", "answer": "x", "extract": "(x)"}, {"type": "numeric", "answer": 2.5},
                 {"type": "format", "json": True}, {"type": "code", "tests": "assert f() == 1", "entry": "f"}]:
        c = parse_check(spec)
        assert parse_check(c.model_dump(by_alias=True)) == c
        hash(c)


def test_judge_turns():
    out = judge_turns([NumericCheck(answer=12), None], ["The sum is 12.", "whatever"])
    assert out[0] == CheckResult(1.0, True, out[0].detail) and out[1] is None
    with pytest.raises(FusevalError, match="2 checks for 1 answer turns"):
        judge_turns([None, None], ["only one"])


# --- the zoo domains: the checks must agree with `fusion.zoo.domains.check`, the domains' own truth ---

def _candidates(domain: str, core: str, turn: int, pool: list[str]) -> list[str]:
    """Right and wrong answer texts for one turn."""
    phrase = domains.DOMAINS[domain].phrase
    ref = phrase(core, turn)
    out = [ref, f"  {ref}  \n", ref.rstrip("."), ref + "..", core, core + ".",  # right, in accepted forms
           "", "   ", "lorem ipsum dolor", "???", ".", ref.lower(), phrase(core, 1 - turn),  # garbage, wrong phrase
           phrase(core + " apples", turn), "I think " + ref, ref + " Hope this helps.", ref.replace(core, core + core),
           ]
    out += [phrase(w, turn) for w in pool]  # the domain's wrong cores, and other conversations' cores
    if core.isdigit():
        out += [phrase(str(int(core) + k), turn) for k in (-1, 1, 10)] + [phrase(str(2 * int(core)), turn)]
        out += [phrase(core + ".5", turn), phrase("-" + core, turn)]
    else:
        out += [phrase(core.lower(), turn), phrase(core + "s", turn), phrase(core[::-1], turn), phrase(core[:-1], turn)]
    return out


@pytest.mark.parametrize("domain", sorted(domains.DOMAINS))
def test_domain_checks_pass_reference_answers(domain):
    for seed in (0, 1):
        for conv in domains.generate(domain, 50, seed, "test"):
            texts = [m["content"] for m in conv.messages if m["role"] == "assistant"]
            results = judge_turns(domain_checks(domain, conv.answers), texts)
            assert all(r.passed for r in results), (conv.qid, texts, results)


@pytest.mark.parametrize("domain", sorted(domains.DOMAINS))
def test_domain_checks_agree_with_domain_check(domain):
    n_checked = n_wrong = 0
    for seed in (0, 1):
        convs = domains.generate(domain, 50, seed, "test")
        noisy = domains.generate(domain, 20, seed, "test", noise=1.0)
        for conv in convs:
            checks = domain_checks(domain, conv.answers)
            refs = [m["content"] for m in conv.messages if m["role"] == "assistant"]
            for turn in (0, 1):
                pool = [c.answers[turn] for c in noisy[:8]] + [c.answers[turn] for c in convs[:4]]
                for text in _candidates(domain, conv.answers[turn], turn, pool):
                    answer = [text, refs[1]] if turn == 0 else [refs[0], text]
                    truth = domains.check(conv, answer)[turn]
                    got = check_answer(checks[turn], text)
                    assert got.passed == truth, (domain, turn, conv.answers[turn], text, got.detail)
                    assert got.score == (1.0 if truth else 0.0)
                    n_checked += 1
                    n_wrong += not truth
    assert n_wrong > 0.6 * n_checked  # the set is mostly wrong answers


def test_domain_check_kinds():
    assert all(isinstance(c, NumericCheck) for c in domain_checks("arithmetic", ["3", "6"]))
    assert all(isinstance(c, ExactCheck) and c.extract for c in domain_checks("code", ["3", "6"]))
    assert domain_checks("formatting", ["RED SUN"]) == [ExactCheck(answer="RED SUN")]
    with pytest.raises(FusevalError, match="unknown domain"):
        domain_checks("poetry", ["x"])


# --- code checks (real sandboxed subprocesses) ---

ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def _fenced(code: str, lang: str = "python") -> str:
    return f"Here is the function:\n```{lang}\n{code}\n```\nIt adds the numbers."


def test_extract_program_choices():
    two = "Draft:\n```python\ndef f(): return 1\n```\nFinal:\n```py\ndef f(): return 2\n```"
    assert extract_program(two).strip() == "def f(): return 2"
    assert extract_program("```\nx = 1\n```").strip() == "x = 1"
    assert extract_program("```bash\nls\n```\n```python\nx = 2\n```").strip() == "x = 2"
    assert extract_program("def f(x):\n    return x\n") == "def f(x):\n    return x\n"
    assert extract_program("Just some prose, no code.") is None
    assert extract_program("```js\nlet x = 1;\n```") is None


def test_code_check_correct_and_wrong():
    c = CodeCheck(tests=ADD_TESTS, entry="add")
    ok = check_answer(c, "<think>easy</think>" + _fenced("def add(a, b):\n    return a + b"))
    assert (ok.score, ok.passed) == (1.0, True)
    bad = check_answer(c, _fenced("def add(a, b):\n    return a * b"))
    assert (bad.score, bad.passed) == (0.0, False)
    assert bad.detail.startswith("assertion failed") and "assert add(2, 3) == 5" in bad.detail
    missing = check_answer(c, _fenced("def plus(a, b):\n    return a + b"))
    assert missing.score == 0.0 and "entry add is not defined" in missing.detail
    crash = check_answer(c, _fenced("def add(a, b):\n    return a + undefined"))
    assert crash.score == 0.0 and "NameError" in crash.detail


def test_code_check_syntax_error_and_no_code():
    c = CodeCheck(tests=ADD_TESTS)
    r = check_answer(c, _fenced("def add(a, b)\n    return a + b"))
    assert r.score == 0.0 and "syntax error" in r.detail
    r = check_answer(c, "I would add them.")
    assert r.score == 0.0 and "no Python code" in r.detail


def test_code_check_loop_and_memory_bomb_score_zero():
    loop = check_answer(CodeCheck(tests="assert f()", timeout_s=1), _fenced("def f():\n    while True:\n        pass"))
    assert loop.score == 0.0 and "timed out" in loop.detail
    bomb = "def f():\n    x = []\n    while True:\n        x.append(' ' * 10**6)"
    mem = check_answer(CodeCheck(tests="assert f()", memory_mb=128, timeout_s=10), _fenced(bomb))
    assert mem.score == 0.0 and "memory" in mem.detail


def test_code_check_blocked_action_scores_zero():
    r = check_answer(CodeCheck(tests="assert f() == 0"), _fenced("import os\ndef f():\n    return os.system('true')"))
    assert r.score == 0.0 and "PermissionError" in r.detail


def test_sandbox_failure_is_missing_not_zero(monkeypatch):
    def broken(*a, **kw):
        raise OSError("cannot start")

    monkeypatch.setattr(prog, "run_python", broken)
    r = check_answer(CodeCheck(tests=ADD_TESTS), _fenced("def add(a, b):\n    return a + b"))
    assert (r.score, r.passed) == (None, None) and "sandbox failed" in r.detail


# --- the Judge adapter used by the runner ---

def _question(checks):
    """A stand-in for `harness.formats.questions.Question` whose `checks` may still be plain data."""
    return SimpleNamespace(question_id="z1", category="arithmetic", turns=["What is 5 plus 7?", "Double it."],
                           checks=checks)


def test_programmatic_judge_with_plain_and_parsed_checks():
    from harness.judges.base import SingleItem

    judge = prog.ProgrammaticJudge()
    for checks in ([{"type": "numeric", "answer": 12}, None], [NumericCheck(answer=12), None]):
        q = _question(checks)
        assert judge.applies(q, 1) and not judge.applies(q, 2)
        assert judge.ref_version(q, 1) and judge.ref_version(q, 2) is None
        done = []
        v = judge.single([SingleItem(q, ["<think>13?</think>12", "24"], 1), SingleItem(q, ["13", "26"], 1)],
                         on_done=done.append)
        assert [x.score for x in v] == [1.0, 0.0] and done == [1, 1]
        assert v[0].prompt_version == PROGRAMMATIC_VERSION and v[0].error is None
        assert v[1].detail["check"]["type"] == "numeric" and v[1].detail["passed"] is False
    assert judge.ref_version(_question([{"type": "numeric", "answer": 12}]), 1) != \
        judge.ref_version(_question([{"type": "numeric", "answer": 13}]), 1)  # a corrected check is re-judged
    assert not judge.applies(_question(None), 1)
    with pytest.raises(FusevalError, match="question 'z1', checks\\[0\\]"):
        judge.applies(_question([{"type": "numerc", "answer": 12}]), 1)


def test_programmatic_judge_sandbox_failure_is_an_error_not_a_zero(monkeypatch):
    from harness.judges.base import SingleItem

    monkeypatch.setattr(prog, "run_python", lambda *a, **kw: (_ for _ in ()).throw(OSError("no sandbox")))
    q = _question([{"type": "code", "tests": "assert True"}])
    (v,) = prog.ProgrammaticJudge().single([SingleItem(q, ["```python\nx = 1\n```"], 1)])
    assert v.score is None and v.error and "sandbox failed" in v.error
