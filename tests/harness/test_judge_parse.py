"""Reading grades and verdicts out of judge outputs: the corpus of realistic outputs, scales, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.judges import parse_json_rating, parse_json_verdict, parse_rating, parse_verdict  # the public entry points

CORPUS = Path(__file__).resolve().parents[1] / "data" / "judge_outputs.jsonl"
LINES = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_corpus_is_large_and_well_formed():
    assert len(LINES) >= 60
    kinds = {r["kind"] for r in LINES}
    assert kinds == {"rating", "verdict"}
    for r in LINES:
        assert set(r) == {"kind", "text", "expected", "note"} and r["note"]
        if r["kind"] == "verdict":
            assert r["expected"] in ("A", "B", "tie", None)
        else:
            assert r["expected"] is None or 1 <= r["expected"] <= 10
    # The corpus exercises failures as well as successes, for both kinds.
    for kind in kinds:
        expected = [r["expected"] for r in LINES if r["kind"] == kind]
        assert expected.count(None) >= 8 and len(expected) - expected.count(None) >= 15


@pytest.mark.parametrize("line", LINES, ids=[f"{n}-{r['kind']}-{r['note'][:40]}" for n, r in enumerate(LINES, 1)])
def test_corpus_line(line):
    parse = parse_rating if line["kind"] == "rating" else parse_verdict
    got = parse(line["text"])
    assert got == line["expected"], line["note"]
    if line["kind"] == "rating" and got is not None:
        assert isinstance(got, float)


@pytest.mark.parametrize("text, scale, expected", [
    ("Rating: [[4]]", (1, 5), 4.0),
    ("Rating: [[4/5]]", (1, 5), 4.0),
    ("Rating: [[4/10]]", (1, 5), None),   # denominator is not the scale's top
    ("Rating: [[7]]", (1, 5), None),      # out of this scale
    ("Rating: [[0]]", (0, 10), 0.0),      # 0 is a real grade when the scale has it
    ("Rating: [[0]]", (1, 10), None),
    ("Score: 3 out of 5", (1, 5), 3.0),
    ("Rating: [[0.85]]", (0.0, 1.0), 0.85),
])
def test_scale(text, scale, expected):
    assert parse_rating(text, scale=scale) == expected


def test_bad_scale_is_a_programming_error():
    with pytest.raises(ValueError, match="scale"):
        parse_rating("[[5]]", scale=(10, 1))


def test_none_and_non_strings_are_missing():
    assert parse_rating(None) is None and parse_verdict(None) is None
    assert parse_json_rating(None) is None and parse_json_verdict("") is None


@pytest.mark.parametrize("text, expected", [
    ('{"explanation": "Good.", "rating": 8}', 8.0),
    ('Here is my evaluation:\n```json\n{"explanation": "Uses {braces} in text.", "rating": 6.5}\n```\nThanks!', 6.5),
    ('Sure! {"explanation": "ok", "rating": 7} Hope this helps.', 7.0),
    ('{"explanation": "ok", "score": 9}', 9.0),                       # "score" accepted as the key
    ('{"explanation": "ok", "rating": "7"}', 7.0),                    # numeric string
    ('{"explanation": "ok", "rating": 0}', None),                     # out of scale
    ('{"explanation": "ok", "rating": 11}', None),
    ('{"explanation": "ok", "rating": true}', None),                  # a bool is not a number
    ('{"explanation": "ok", "rating": "high"}', None),
    ('{"explanation": "ok"}', None),                                  # no rating key
    ('{"explanation": "ok", "rating": 7', None),                      # truncated object
    ('Draft: {"rating": 6}\nFinal: {"rating": 8}', None),             # two objects disagree
    ('{"rating": 6} and again {"rating": 6}', 6.0),                   # two objects agree
    ("no json at all, Rating: [[7]]", None),                          # JSON parser reads JSON only
])
def test_json_rating(text, expected):
    assert parse_json_rating(text) == expected


@pytest.mark.parametrize("text, expected", [
    ('{"explanation": "A follows the format.", "verdict": "A"}', "A"),
    ('```json\n{"explanation": "B is right", "verdict": "B"}\n```', "B"),
    ('Result: {"explanation": "same", "verdict": "tie"} (end)', "tie"),
    ('{"verdict": "C"}', "tie"),                                      # FastChat's letter for a tie
    ('{"verdict": "Tie"}', "tie"),
    ('{"verdict": "Assistant B"}', "B"),
    ('{"winner": "A"}', "A"),
    ('{"verdict": "both"}', None),
    ('{"verdict": 1}', None),
    ('{"explanation": "no verdict"}', None),
    ('{"verdict": "A"} then {"verdict": "B"}', None),
])
def test_json_verdict(text, expected):
    assert parse_json_verdict(text) == expected


def test_json_rating_respects_scale():
    assert parse_json_rating('{"rating": 4}', scale=(1, 5)) == 4.0
    assert parse_json_rating('{"rating": 6}', scale=(1, 5)) is None


def test_free_text_parsers_read_whole_json_outputs():
    # A judge asked for structured output answers with JSON; the text parsers read the same value.
    assert parse_rating('```json\n{"explanation": "fine", "rating": 6}\n```') == 6.0
    assert parse_verdict('{"explanation": "fine", "verdict": "B"}') == "B"
    # A JSON object without the key falls back to the text rules over the whole output.
    assert parse_rating('{"explanation": "Clear and correct. Rating: [[9]]"}') == 9.0

