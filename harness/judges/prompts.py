"""Our judge prompts, versioned: change any wording here and bump PROMPT_VERSION.

A prompt is (system message, user message). Single grading asks for a 1-10 grade, pairwise for
the better of two replies; each has variants with a reference answer and for a later turn (the
conversation so far shown as context, only the last reply graded). In text mode the judge ends
with `Rating: [[N]]` / `Verdict: [[A]]`; in JSON mode it fills a schema that the backend enforces.
"""

from __future__ import annotations

from dataclasses import dataclass

PROMPT_VERSION = "fuseval-judge-v1"

_SYSTEM_SINGLE = (
    "You grade replies written by AI assistants. Be strict and fair: judge what the reply says, not how "
    "long it is or how confident it sounds. A reply that is wrong where a correct answer exists cannot "
    "score above 3, however well written.")

_SYSTEM_PAIR = (
    "You compare two replies written by AI assistants to the same request. Be strict and fair: the order "
    "in which the replies appear, their length and their confidence must not sway you; only which one "
    "serves the user better.")

_CRITERIA = ("Consider, in this order: is it correct; does it do what the user asked (including any "
             "constraint on length or format); is it useful and clear.")

_REF = ("A reference answer is given. Use it to check correctness; the reply need not match its wording, "
        "and a different route to the same result is fine.")

_TEXT_SINGLE = ("First explain your grade in two to five sentences. Then, on the last line, give an integer "
                "grade from 1 (useless) to 10 (excellent) written exactly like this: Rating: [[N]]")
_JSON_SINGLE = ('Reply with a JSON object: {"explanation": "<two to five sentences>", '
                '"rating": <an integer from 1 (useless) to 10 (excellent)>}.')
_TEXT_PAIR = ("First explain your decision in two to five sentences. Then, on the last line, write exactly "
              "one of: Verdict: [[A]] (reply A is better), Verdict: [[B]] (reply B is better), "
              "Verdict: [[tie]] (equally good or equally bad).")
_JSON_PAIR = ('Reply with a JSON object: {"explanation": "<two to five sentences>", '
              '"verdict": "A" | "B" | "tie"}.')

RETRY_SINGLE = "Your grade could not be read. Reply with only this line, N an integer from 1 to 10: Rating: [[N]]"
RETRY_PAIR = ("Your verdict could not be read. Reply with only one line: Verdict: [[A]], Verdict: [[B]] or "
              "Verdict: [[tie]]")
RETRY_JSON = ("Your reply could not be read (it may have been cut off). Reply again with the JSON object only, "
              "the explanation in one sentence.")

# What the backend must produce in JSON mode (vLLM guided decoding / OpenAI structured outputs).
RATING_SCHEMA = {
    "type": "object",
    "properties": {"explanation": {"type": "string", "maxLength": 1200},
                   "rating": {"type": "integer", "minimum": 1, "maximum": 10}},
    "required": ["explanation", "rating"], "additionalProperties": False,
}
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"explanation": {"type": "string", "maxLength": 1200},
                   "verdict": {"type": "string", "enum": ["A", "B", "tie"]}},
    "required": ["explanation", "verdict"], "additionalProperties": False,
}


@dataclass(frozen=True)
class Prompt:
    name: str  # e.g. "single-ref-multi/json": which variant, recorded with the judgment
    system: str
    user: str

    @property
    def version(self) -> str:
        return f"{PROMPT_VERSION}/{self.name}"

    def messages(self) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


def _conversation(questions: list[str], answers: list[str], label: str = "Assistant") -> str:
    """The turns so far, the last one being the reply under judgment."""
    parts = []
    for k, (q, a) in enumerate(zip(questions, answers), 1):
        parts.append(f"### User, turn {k}\n{q}\n\n### {label}, turn {k}\n{a}")
    return "\n\n".join(parts)


def _variant(kind: str, turn: int, reference: str | None, json_mode: bool) -> str:
    return kind + ("-ref" if reference is not None else "") + ("-multi" if turn > 1 else "") + \
        ("/json" if json_mode else "/text")


def single_prompt(questions: list[str], answers: list[str], turn: int, reference: str | None = None,
                  json_mode: bool = False) -> Prompt:
    """Grade the reply to `turn` (1-based); `questions`/`answers` hold every turn up to it."""
    q, a = questions[:turn], answers[:turn]
    if turn == 1:
        body = f"[The user's request]\n{q[0]}\n\n[The assistant's reply]\n{a[0]}"
        task = "Grade the assistant's reply."
    else:
        body = f"[The conversation]\n{_conversation(q, a)}"
        task = (f"Grade only the assistant's reply in turn {turn}; the earlier turns are context (a reply "
                "that contradicts or ignores them is worse).")
    ref = f"\n\n[Reference answer for turn {turn}]\n{reference}" if reference is not None else ""
    user = "\n\n".join(p for p in (body + ref, task, _CRITERIA, _REF if reference is not None else "",
                                   _JSON_SINGLE if json_mode else _TEXT_SINGLE) if p)
    return Prompt(_variant("single", turn, reference, json_mode), _SYSTEM_SINGLE, user)


def pair_prompt(questions: list[str], answers_a: list[str], answers_b: list[str], turn: int,
                reference: str | None = None, json_mode: bool = False) -> Prompt:
    """Which reply to `turn` is better, A's or B's (each shown with its own earlier turns)."""
    q = questions[:turn]
    if turn == 1:
        body = (f"[The user's request]\n{q[0]}\n\n[Reply A]\n{answers_a[0]}\n\n[Reply B]\n{answers_b[0]}")
        task = "Decide which reply is better."
    else:
        body = (f"[Conversation with assistant A]\n{_conversation(q, answers_a[:turn], 'Assistant A')}\n\n"
                f"[Conversation with assistant B]\n{_conversation(q, answers_b[:turn], 'Assistant B')}")
        task = (f"Decide whose reply in turn {turn} is better; the earlier turns are context.")
    ref = f"\n\n[Reference answer for turn {turn}]\n{reference}" if reference is not None else ""
    user = "\n\n".join(p for p in (body + ref, task, _CRITERIA, _REF if reference is not None else "",
                                   _JSON_PAIR if json_mode else _TEXT_PAIR) if p)
    return Prompt(_variant("pair", turn, reference, json_mode), _SYSTEM_PAIR, user)
