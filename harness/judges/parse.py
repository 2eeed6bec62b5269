"""Read a grade or a pairwise verdict out of an LLM judge's text; None when it cannot be read.

    parse_rating("The answer is accurate and concise. Rating: [[8]]")   # 8.0
    parse_verdict('... My final verdict is "[[B]]".')                   # 'B'
    parse_json_rating('```json\\n{"explanation": "...", "rating": 7}\\n```')  # 7.0

A verdict that cannot be read is None, which the caller retries and then records as missing:
never 0, never a guess (MT-Bench's scripts count a parse failure as a score, which biases means).
Shared rules for both parsers:
- The text is NFKC-normalised first, so full-width brackets, digits and colons (common in
  Japanese and Chinese judge outputs) read like ASCII.
- Reasoning blocks (`<think>...</think>`, `<thinking>`, `<reasoning>`) are dropped before parsing: a
  reasoning judge tries out verdicts there. A closing tag without an opening one (the chat template
  opened it) drops everything before it; an opening tag never closed drops everything after it.
- Forms are tried from the strongest (double brackets) to the weakest; the strongest form present
  decides. If its candidates disagree the result is None (ambiguous) and weaker forms are not
  consulted, so a judge that wrote `[[7]] ... [[9]]` is never silently read as one of them.
- A double-bracket candidate in quotes or backticks (`the format "[[rating]]", e.g. "Rating: [[5]]"`)
  is the judge quoting the prompt and is ignored, unless it ends the text (`verdict: "[[B]]".`).
- A text that is a JSON object (optionally in a ```json fence) with the structured-output key is
  read by the JSON rules instead.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Literal, TypeVar

Verdict = Literal["A", "B", "tie"]
T = TypeVar("T")

_NUM = r"[+-]?\d+(?:\.\d*)?"
# A denominator, `/ 10` or `out of 10`, which must equal the top of the scale.
_DENOM = r"(?:\s*(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d*)?))?"
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
_BEFORE_QUOTE = re.compile(rf"[{_QUOTES}]\s*(?:[A-Za-z][A-Za-z ]{{0,20}}:\s*)?$")
_AFTER_QUOTE = re.compile(rf"^\s*[{_QUOTES}]")

_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
_THINK_CLOSE = re.compile(r"^.*</(?:think|thinking|reasoning)>", re.S | re.I)
_THINK_OPEN = re.compile(r"<(?:think|thinking|reasoning)>.*$", re.S | re.I)

# --- ratings ---------------------------------------------------------------------------------
_R_DOUBLE = re.compile(rf"\[\[\s*(?:(?:rating|score)\s*:?\s*)?(?P<num>{_NUM}){_DENOM}\s*\]\]", re.I)
# "Rating:", "**Score:**", "a rating of", "Rating (1-10):".
_LABEL = (r"\b(?:rating|score|grade)\b[*_\s]*(?:\(\s*\d+\s*(?:-|\u2013|to)\s*\d+\s*\)[*_\s]*)?"
          r"(?:(?:is|of)\b)?[*_\s]*[:=]?[*_\s]*")
_R_SINGLE = re.compile(rf"{_LABEL}\[\s*(?P<num>{_NUM}){_DENOM}\s*\]", re.I)
# A bare labelled number; not the start of a range ("a rating of 1 to 10", "score: 1-10").
_R_LABELLED = re.compile(rf"{_LABEL}(?P<num>{_NUM})(?![\d.])(?!\s*(?:-|\u2013|to)\s*\d){_DENOM}(?![\d.])", re.I)
# `7/10` or `8 out of 10` closing the text, give or take markdown and punctuation.
_R_TAIL = re.compile(rf"(?<![\w.])(?P<num>{_NUM})\s*(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d*)?)[\s*_.!)\]]*$", re.I)

# --- verdicts --------------------------------------------------------------------------------
_V_DOUBLE = re.compile(r"\[\[\s*(?P<v>A|B|C|tie)\s*\]\]", re.I)
_V_LABEL = r"\b(?i:verdict)\b[*_\s]*(?:\b(?i:is)\b)?[*_\s]*[:=]?[*_\s\"'`]*"
_V_SINGLE_LABELLED = re.compile(rf"{_V_LABEL}\[\s*(?P<v>A|B|C|[Tt]ie)\s*\]")
_V_SINGLE_ALONE = re.compile(r"^[\s*_\"'`]*\[\s*(?P<v>A|B|C|[Tt]ie)\s*\][\s*_.\"'`]*$")
# "Final verdict: A", "Verdict: Assistant B", "verdict: a tie". A letter must be a capital that ends the
# verdict ("Final verdict: A close call, ..." is an article) and stand alone ("A and B", "A, B" are not).
_V_LABELLED = re.compile(
    rf"{_V_LABEL}(?:(?i:assistant)\s+)?"
    r"(?:(?P<v>A|B|C)(?=\s*(?:$|[.,;:!?)\]*_\"'`(\u2013\u2014-]|(?i:is|was|wins|won|has|provides|gives|because)\b))"
    r"(?!\s*(?:,|&|/|(?i:and|or|vs\.?|versus))\s*(?:(?i:assistant)\s+)?[AB]\b)"
    r"|(?P<t>(?i:(?:a\s+)?tie))\b)", re.M)
_V_PROSE = re.compile(r"\bassistant\s+(?P<v>[AB])(?:'s\s+(?:answer|response))?\s+(?:is|was)\s+"
                      r"(?:(?:clearly|slightly|significantly|much|far|overall|definitely)\s+)?"
                      r"(?:better|the\s+better\s+(?:one|answer|response)|superior|the\s+winner|stronger)\b"
                      r"|\bassistant\s+(?P<w>[AB])\s+wins\b", re.I)
_V_PROSE_TIE = re.compile(r"\b(?:it\s*'?s|it\s+is|this\s+is|the\s+result\s+is)\s+a\s+tie\b", re.I)
_V_PROSE_DOUBT = re.compile(r"\b(?:whether|if|not|neither|nor)\b|n't\b", re.I)


def _clean(text: str | None) -> str:
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = _THINK_BLOCK.sub(" ", text)
    text = _THINK_CLOSE.sub(" ", text)
    return _THINK_OPEN.sub(" ", text)


def _quoted(text: str, m: re.Match) -> bool:
    line_start = text.rfind("\n", 0, m.start()) + 1
    return bool(_BEFORE_QUOTE.search(text[line_start:m.start()]) and _AFTER_QUOTE.match(text[m.end():]))


def _candidates(text: str, found: list[re.Match]) -> list[re.Match]:
    """Double-bracket matches less those quoted mid-text (a judge citing the requested format)."""
    return [m for m in found if not _quoted(text, m) or not text[m.end():].strip(_QUOTES + " \t\n*_.!)")]


def _decide(values: list[T | None]) -> T | None:
    """The value when all candidates agree; None when there are none or they disagree."""
    if not values or any(v is None for v in values):
        return None
    return values[0] if all(v == values[0] for v in values) else None


def _in_scale(m: re.Match, scale: tuple[float, float]) -> float | None:
    value = float(m.group("num"))
    den = m.groupdict().get("den")
    if den is not None and float(den) != float(scale[1]):
        return None  # "4/5" on a 1-10 scale: the judge used another scale
    return value if scale[0] <= value <= scale[1] else None


def _check_scale(scale: tuple[float, float]) -> None:
    if not scale[0] < scale[1]:
        raise ValueError(f"scale must be (low, high) with low < high, got {scale}")


def parse_rating(text: str | None, scale: tuple[float, float] = (1, 10)) -> float | None:
    """The judge's grade on `scale`, or None when there is none, it is out of scale, or ambiguous.

    Forms, strongest first (the strongest present decides; see the module docstring):
    1. double brackets: `[[7]]`, `[[7.5]]`, `[[ 8 ]]`, `[[8/10]]`, `[[8 / 10]]`, `**[[8]]**`,
       `Rating: [[7]]`, `[[Rating: 7]]`; placeholders like `[[rating]]` are not candidates;
    2. a labelled single bracket: `Rating: [7]`, `Score: [8/10]` (a bare `[7]` is too often a
       citation or list marker to count, unlike FastChat's fallback);
    3. a labelled number: `Rating: 7`, `**Rating:** 7/10`, `Score: 8 out of 10`, `a rating of 6`
       ("rating", "score" or "grade"; a range such as "a rating of 1 to 10" is not a candidate);
    4. a fraction ending the text: `... overall 7/10.`, `I'd give it 8 out of 10`.
    A denominator must equal the top of the scale. All candidates of the deciding form must agree
    (`[[8]]` twice is 8; `[[7]]` and `[[9]]` is None). A value outside the scale (0, 11, -1) is
    None, not clipped. A refusal, empty or truncated text (`Rating: [[8`) has no candidate: None.
    """
    _check_scale(scale)
    obj = _whole_json(text)
    if obj is not None and _has_key(obj, _RATING_KEYS):
        return _json_rating_value(obj, scale)
    text = _clean(text)
    double = _candidates(text, list(_R_DOUBLE.finditer(text)))
    if double:
        return _decide([_in_scale(m, scale) for m in double])
    for pattern in (_R_SINGLE, _R_LABELLED):
        found = list(pattern.finditer(text))
        if found:
            return _decide([_in_scale(m, scale) for m in found])
    m = _R_TAIL.search(text.rstrip())
    return _in_scale(m, scale) if m else None


def _verdict(letter: str) -> Verdict:
    letter = letter.strip().lower()
    return "A" if letter == "a" else "B" if letter == "b" else "tie"  # C is FastChat's tie


def parse_verdict(text: str | None) -> Verdict | None:
    """The pairwise verdict 'A', 'B' or 'tie', or None when there is none or it is ambiguous.

    Forms, strongest first (the strongest present decides; see the module docstring):
    1. double brackets: `[[A]]`, `[[B]]`, `[[C]]` (FastChat's tie), `[[tie]]`, `Verdict: [[A]]`,
       `**[[B]]**`; distinct verdicts (`[[A]]` and `[[B]]`) are None, a repeated one counts once;
    2. a single bracket labelled `verdict` (`Final verdict: [B]`) or alone on the last line (`[A]`);
    3. a labelled letter: `Final verdict: A`, `Verdict: Assistant B`, `verdict: tie` (capital
       letters only, and not `A and B`);
    4. prose, read only in the last sentence, and only when it has no "whether", "if", "not",
       "neither"...: `Assistant A is better`, `Assistant B's response is clearly superior`,
       `Assistant A wins`, `It's a tie`. Earlier sentences are not read: judges weigh both sides
       before deciding, and a sentence like "one might think Assistant A is better" is not a verdict.
    """
    obj = _whole_json(text)
    if obj is not None and _has_key(obj, _VERDICT_KEYS):
        return _json_verdict_value(obj)
    text = _clean(text)
    double = _candidates(text, list(_V_DOUBLE.finditer(text)))
    if double:
        return _decide([_verdict(m.group("v")) for m in double])
    found = list(_V_SINGLE_LABELLED.finditer(text))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not found and lines:
        found = list(_V_SINGLE_ALONE.finditer(lines[-1]))
    if found:
        return _decide([_verdict(m.group("v")) for m in found])
    found = list(_V_LABELLED.finditer(text))
    if found:
        return _decide([_verdict(m.group("v") or "tie") for m in found])
    return _prose_verdict(text)


def _last_sentence(text: str) -> str:
    parts = [p for p in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if p.strip(" *_#>-")]
    return parts[-1] if parts else ""


def _prose_verdict(text: str) -> Verdict | None:
    last = _last_sentence(text)
    if not last or _V_PROSE_DOUBT.search(last):
        return None
    votes = [_verdict(m.group("v") or m.group("w")) for m in _V_PROSE.finditer(last)]
    votes += ["tie" for _ in _V_PROSE_TIE.finditer(last)]
    return _decide(votes)


# --- structured (JSON) outputs ---------------------------------------------------------------
_RATING_KEYS = ("rating", "score")
_VERDICT_KEYS = ("verdict", "winner")
_FENCE = re.compile(r"```[A-Za-z]*\s*\n?(.*?)```", re.S)


def _whole_json(text: str | None) -> dict | None:
    """The object when the whole text is one JSON object, optionally inside a ``` fence."""
    if not text:
        return None
    body = text.strip()
    m = _FENCE.fullmatch(body)
    if m:
        body = m.group(1).strip()
    if not body.startswith("{"):
        return None
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _json_objects(text: str | None) -> list[dict]:
    """JSON objects found in the text: the whole text, else fenced blocks, else `{...}` spans."""
    if not text:
        return []
    whole = _whole_json(text)
    if whole is not None:
        return [whole]
    out: list[dict] = []
    for block in _FENCE.findall(text):
        obj = _whole_json(block)
        if obj is not None:
            out.append(obj)
    if out:
        return out
    decoder = json.JSONDecoder()
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            out.append(obj)
        pos = text.find("{", end)
    return out


def _has_key(obj: dict, keys: tuple[str, ...]) -> bool:
    return any(k in obj for k in keys)


def _json_rating_value(obj: dict, scale: tuple[float, float]) -> float | None:
    value = next(obj[k] for k in _RATING_KEYS if k in obj)
    if isinstance(value, str) and re.fullmatch(r"\s*" + _NUM + r"\s*", value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if scale[0] <= value <= scale[1] else None


def _json_verdict_value(obj: dict) -> Verdict | None:
    value = next(obj[k] for k in _VERDICT_KEYS if k in obj)
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(?:assistant\s+)?(a|b|c|tie)\s*", value, re.I)
    return _verdict(m.group(1)) if m else None


def parse_json_rating(text: str | None, scale: tuple[float, float] = (1, 10)) -> float | None:
    """The `rating` (or `score`) of a structured judge output such as {"explanation": "...", "rating": 7}.

    A ```json fence and text around the object are tolerated. None when no object has the key, the
    value is not a number (numeric strings count) or is outside `scale`, or objects disagree.
    """
    _check_scale(scale)
    objs = [o for o in _json_objects(text) if _has_key(o, _RATING_KEYS)]
    return _decide([_json_rating_value(o, scale) for o in objs])


def parse_json_verdict(text: str | None) -> Verdict | None:
    """The `verdict` (or `winner`) of a structured output such as {"explanation": "...", "verdict": "A"}.

    Values "A", "B", "tie" (and "C", "Assistant A", any case); None otherwise or when objects disagree.
    """
    objs = [o for o in _json_objects(text) if _has_key(o, _VERDICT_KEYS)]
    return _decide([_json_verdict_value(o) for o in objs])
