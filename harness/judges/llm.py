"""An LLM as judge, through any backend: single grades (1-10) and pairwise verdicts in both orders.

    with make_backend("vllm", judge_dir) as b:
        judge = LLMJudge(b, name="judge@1a2b3c")
        verdicts = judge.single([SingleItem(question, answer_turns, turn=2)])

When the backend enforces JSON schemas (vLLM, OpenAI-compatible endpoints) the judge asks for a
JSON verdict under a schema, so it cannot come back malformed unless cut off; otherwise it asks
for `Rating: [[N]]` and parses the text. An unreadable verdict is retried once, by asking the
judge, in the same conversation, for the verdict line alone; if that fails too it is missing.
Pairwise comparisons run in both orders: a verdict that flips with the order is a tie.
"""

from __future__ import annotations

from collections.abc import Callable

from fusion.common.errors import FusevalError
from fusion.common.hashing import digest
from harness.backends.base import Backend, ChatRequest, ChatResult, GenParams
from harness.judges.base import PairItem, SingleItem, Verdict, reference_for
from harness.judges.parse import parse_json_rating, parse_json_verdict, parse_rating, parse_verdict
from harness.judges.prompts import (
    PROMPT_VERSION,
    RATING_SCHEMA,
    RETRY_JSON,
    RETRY_PAIR,
    RETRY_SINGLE,
    VERDICT_SCHEMA,
    Prompt,
    pair_prompt,
    single_prompt,
)
from harness.judges.text import strip_reasoning


class LLMJudge:
    """Grades answers with a model served by `backend`; `name` identifies the judge model (name@hash)."""

    def __init__(self, backend: Backend, name: str, temperature: float = 0.0, max_new_tokens: int = 1024,
                 structured: bool | None = None, reasoning_tags: tuple[str, ...] = ("think", "reasoning"),
                 seed: int = 0):
        if structured and not backend.supports_json_schema:
            raise FusevalError(f"judge backend {backend.model_id!r} cannot enforce JSON schemas; "
                               "drop structured output or serve the judge with vLLM or an OpenAI-compatible endpoint")
        self.backend = backend
        self.name = name
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.json_mode = backend.supports_json_schema if structured is None else structured
        self.reasoning_tags = reasoning_tags
        self.seed = seed
        mode = "json" if self.json_mode else "text"
        self.id = f"llm/{name}/{PROMPT_VERSION}/{mode}/t{temperature:g}/n{max_new_tokens}"

    def applies(self, question, turn: int) -> bool:
        return True

    def ref_version(self, question, turn: int) -> str | None:
        ref = reference_for(question, turn)
        return digest("ref", ref) if ref is not None else None

    def _clean(self, turns: list[str]) -> list[str]:
        return [strip_reasoning(t, self.reasoning_tags) for t in turns]

    def _params(self, schema: dict, repeat: int, salt: str) -> GenParams:
        seed = int(digest(self.seed, repeat, salt)[:8], 16) & 0x7FFFFFFF
        return GenParams(temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=seed,
                         json_schema=schema if self.json_mode else None)

    def single(self, items: list[SingleItem], on_done: Callable[[int], None] | None = None) -> list[Verdict]:
        prompts = [single_prompt(it.question.turns, self._clean(it.answer), it.turn,
                                 reference_for(it.question, it.turn), self.json_mode) for it in items]
        params = [self._params(RATING_SCHEMA, it.repeat, p.user) for it, p in zip(items, prompts)]
        parse = _either(parse_json_rating, parse_rating) if self.json_mode else parse_rating
        outs = self._ask(prompts, params, parse, RETRY_JSON if self.json_mode else RETRY_SINGLE, on_done)
        return [Verdict(score=value, prompt_version=p.version, detail=detail, error=err)
                for p, (value, detail, err) in zip(prompts, outs)]

    def pair(self, items: list[PairItem], on_done: Callable[[int], None] | None = None) -> list[Verdict]:
        """Both orders per item: g1 shows (A, B), g2 shows (B, A); the verdict is in terms of A and B."""
        prompts, params = [], []
        for it in items:
            a, b = self._clean(it.answer_a), self._clean(it.answer_b)
            ref = reference_for(it.question, it.turn)
            for first, second in ((a, b), (b, a)):
                p = pair_prompt(it.question.turns, first, second, it.turn, ref, self.json_mode)
                prompts.append(p)
                params.append(self._params(VERDICT_SCHEMA, it.repeat, p.user))
        parse = _either(parse_json_verdict, parse_verdict) if self.json_mode else parse_verdict
        outs = self._ask(prompts, params, parse, RETRY_JSON if self.json_mode else RETRY_PAIR, on_done)
        verdicts = []
        for k in range(len(items)):
            (g1, d1, e1), (g2, d2, e2) = outs[2 * k], outs[2 * k + 1]
            g2 = {"A": "B", "B": "A"}.get(g2, g2)  # g2 showed B first: its "A" is our B
            winner = combine_orders(g1, g2)
            verdicts.append(Verdict(winner=winner, prompt_version=prompts[2 * k].version, error=e1 or e2,
                                    detail={"g1": d1, "g2": d2, "g1_winner": g1, "g2_winner": g2}))
        return verdicts

    def _ask(self, prompts: list[Prompt], params: list[GenParams], parse: Callable,
             retry_text: str, on_done) -> list[tuple[object, dict, str | None]]:
        """(parsed value or None, detail, error) per prompt, with one follow-up for unreadable ones."""
        requests = [ChatRequest(p.messages(), gp) for p, gp in zip(prompts, params)]
        first = self.backend.generate(requests, on_done=on_done)
        outs: list[tuple[object, dict, str | None]] = []
        redo = []
        for i, (p, r) in enumerate(zip(prompts, first)):
            detail = {"user_prompt": p.user, "judgment": clip(r.text), "usage": _usage(r)}
            if not r.ok:
                outs.append((None, detail | {"error": r.error}, r.error))
                continue
            value = parse(r.text)
            outs.append((value, detail, None))
            if value is None:
                redo.append(i)
        if redo:
            again = []
            for i in redo:
                follow = requests[i].messages + [{"role": "assistant", "content": clip(first[i].text)},
                                                 {"role": "user", "content": retry_text}]
                again.append(ChatRequest(follow, params[i]))
            for i, r in zip(redo, self.backend.generate(again)):
                value, detail, _ = outs[i]
                detail["retry"] = clip(r.text) if r.ok else None
                if r.ok:
                    value = parse(r.text)
                else:
                    detail["retry_error"] = r.error
                detail["unreadable"] = value is None
                outs[i] = (value, detail, None)
        return outs


def clip(text: str | None, keep: int = 8000) -> str | None:
    """A judge's output as stored and quoted back: a runaway one (an endpoint that floods) keeps its first and last
    `keep // 2` characters, where explanations start and verdicts end; it is parsed whole before this."""
    if text is None or len(text) <= keep:
        return text
    return f"{text[:keep // 2]}\n[... {len(text) - keep} characters cut ...]\n{text[-keep // 2:]}"


def combine_orders(g1: str | None, g2: str | None) -> str | None:
    """The verdict over both orders (both in terms of A and B): agreement wins; a flip or a tie is a tie."""
    if g1 is None or g2 is None:
        return None
    return g1 if g1 == g2 else "tie"


def _either(first: Callable, second: Callable) -> Callable:
    def parse(text: str):
        value = first(text)
        return value if value is not None else second(text)
    return parse


def _usage(r: ChatResult) -> dict:
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens}
