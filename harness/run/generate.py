"""Multi-turn answer generation into a FastChat answer file, resumable.

    with make_backend("transformers", model_dir) as b:
        report = generate_answers(b, load_questions(resolve_bench("general")), "answers.jsonl",
                                  GenerationSettings(max_new_tokens=512, samples=1))

Each question is answered turn by turn: turn k's prompt holds the earlier user turns and the model's
own earlier answers. Every (question, sample) draws with its own seed, derived from the settings'
seed, the question id, the sample and the turn, so a rerun or a resumed run gives the same answers
(greedy categories do not sample at all). Questions go in chunks; a chunk's finished answers are
appended to the file before the next starts, so a killed run loses at most one chunk of work. A
question with a failed request is not written: its error goes to `<out>.failures.jsonl` and the
next run tries it again. An answer file only resumes runs of the same model and settings.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fusion.common.errors import FusevalError
from fusion.common.files import atomic_write_text
from harness.backends.base import CONTEXT_FULL, Backend, ChatRequest, ChatResult, GenParams
from harness.formats.questions import Answer, Choice, Question, append_answers, load_answers, write_answers

# Temperatures by category, as MT-Bench uses them: greedy where there is one right answer, some
# variety for open-ended writing. The zoo's verifiable domains are greedy too.
DEFAULT_TEMPERATURES: dict[str, float] = {
    "writing": 0.7, "roleplay": 0.7, "stem": 0.1, "humanities": 0.1,
    "reasoning": 0.0, "math": 0.0, "coding": 0.0, "extraction": 0.0,
    "arithmetic": 0.0, "comparison": 0.0, "code": 0.0, "formatting": 0.0,
}


class GenerationSettings(BaseModel):
    """How answers are drawn; part of the answer file's identity (see `key`)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(1024, ge=1, description="Upper bound on each turn's answer.")
    samples: int = Field(1, ge=1, description="Answers per question, each with its own seed.")
    seed: int = Field(0, description="Base seed; each question, sample and turn derives its own from it.")
    temperature: float | None = Field(None, ge=0, description="One temperature for every category (overrides the "
                                                              "table).")
    temperatures: dict[str, float] = Field(default_factory=dict, description="Per-category temperature overrides.")
    default_temperature: float = Field(0.7, ge=0, description="For categories the table does not know.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass for sampled categories.")

    def temperature_for(self, category: str) -> float:
        if self.temperature is not None:
            return self.temperature
        return self.temperatures.get(category, DEFAULT_TEMPERATURES.get(category, self.default_temperature))

    def key(self, model_id: str) -> str:
        """Identity of (model, settings): answer files made otherwise are not resumed."""
        blob = json.dumps({"model_id": model_id, **self.model_dump()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def digest(self) -> str:
        """Identity of the settings alone (the store keys answers by model hash and this)."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


def sample_seed(seed: int, question_id: int | str, sample: int, turn: int) -> int:
    h = hashlib.sha256(f"{seed}/{question_id!r}/{sample}/{turn}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


@dataclass
class GenerationReport:
    questions: int = 0
    already_done: int = 0
    answered: int = 0
    failed: int = 0
    requests: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    failures_path: Path | None = None
    first_error: str | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s else 0.0


def failures_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".failures.jsonl")


def pending(questions: list[Question], out: str | Path, model_id: str, settings: GenerationSettings) -> list[Question]:
    """The questions without a complete answer in `out` (checking that `out` belongs to this run)."""
    out = Path(out)
    if not out.exists():
        return list(questions)
    key = settings.key(model_id)
    done = set()
    for a in load_answers(out):
        if a.model_id != model_id or getattr(a, "generation_key", None) != key:
            raise FusevalError(f"{out}: holds answers of {a.model_id!r} made with other generation settings; "
                               "write to another --out, or delete the file to generate again")
        done.add(a.question_id)
    return [q for q in questions if q.question_id not in done]


def generate_answers(backend: Backend, questions: list[Question], out: str | Path, settings: GenerationSettings,
                     chunk_size: int = 64, on_request: Callable[[int], None] | None = None) -> GenerationReport:
    """Answer every question not yet answered in `out`; see the module docstring."""
    out = Path(out)
    t0 = time.perf_counter()
    todo = pending(questions, out, backend.model_id, settings)
    rep = GenerationReport(questions=len(questions), already_done=len(questions) - len(todo))
    _rewrite_if_truncated(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    failures: list[dict] = []
    for c in range(0, len(todo), chunk_size):
        records, errs, usage = answer_chunk(backend, todo[c:c + chunk_size], settings, on_request)
        append_answers(out, records)
        failures += errs
        rep.answered += len(records)
        rep.requests += usage[0]
        rep.completion_tokens += usage[1]
    rep.failed = len({f["question_id"] for f in failures})
    fp = failures_path(out)
    if failures:
        atomic_write_text(fp, "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
        rep.failures_path = fp
    elif fp.exists():
        fp.unlink()
    rep.wall_s = time.perf_counter() - t0
    return rep


def answer_chunk(backend: Backend, chunk: list[Question], settings: GenerationSettings,
                  on_request: Callable[[int], None] | None) -> tuple[list[Answer], list[dict], tuple[int, int]]:
    units = [(q, s) for q in chunk for s in range(settings.samples)]
    history: list[list[dict]] = [[] for _ in units]
    texts: list[list[str]] = [[] for _ in units]
    failed: dict[int, dict] = {}
    n_req = n_tok = 0
    # prompt tokens, completion tokens, seconds, then the turns that found the context full
    stats: dict[int, list[float]] = {u: [0, 0, 0.0] for u in range(len(units))}
    for turn in range(max(len(q.turns) for q in chunk)):
        active = [u for u, (q, _) in enumerate(units) if u not in failed and turn < len(q.turns)]
        requests = []
        for u in active:
            q, s = units[u]
            history[u].append({"role": "user", "content": q.turns[turn]})
            params = GenParams(temperature=settings.temperature_for(q.category), top_p=settings.top_p,
                               max_new_tokens=settings.max_new_tokens,
                               seed=sample_seed(settings.seed, q.question_id, s, turn))
            requests.append(ChatRequest(list(history[u]), params))
        for u, r in zip(active, backend.generate(requests, on_done=on_request)):
            n_req += 1
            q, s = units[u]
            if r.finish_reason == CONTEXT_FULL:  # no room left to answer: an empty answer, judged as such
                r = ChatResult(text="", finish_reason=CONTEXT_FULL, prompt_tokens=r.prompt_tokens, completion_tokens=0)
                stats[u].append(turn + 1)
            if not r.ok:
                failed[u] = {"question_id": q.question_id, "sample": s, "turn": turn + 1, "error": r.error,
                             "model_id": backend.model_id, "tstamp": time.time()}
                continue
            text = r.text.strip()
            history[u].append({"role": "assistant", "content": text})
            texts[u].append(text)
            st = stats[u]
            st[0] += r.prompt_tokens or 0
            st[1] += r.completion_tokens or 0
            st[2] += r.latency_s
            n_tok += r.completion_tokens or 0
    key = settings.key(backend.model_id)
    records = []
    bad_questions = {units[u][0].question_id for u in failed}
    for q in chunk:
        if q.question_id in bad_questions:
            continue
        us = [u for u, (qq, _) in enumerate(units) if qq is q]
        records.append(Answer(
            question_id=q.question_id, model_id=backend.model_id, tstamp=time.time(),
            answer_id=hashlib.sha256(f"{key}/{q.question_id!r}".encode()).hexdigest()[:22],
            choices=[Choice(index=units[u][1], turns=texts[u],
                            usage={"prompt_tokens": int(stats[u][0]), "completion_tokens": int(stats[u][1]),
                                   "latency_s": round(stats[u][2], 4)},
                            **({"context_full_turns": stats[u][3:]} if len(stats[u]) > 3 else {})) for u in us],
            generation_key=key, temperature=settings.temperature_for(q.category),
            chat_template=backend.chat_template_hash,
            usage={"prompt_tokens": int(sum(stats[u][0] for u in us)),
                   "completion_tokens": int(sum(stats[u][1] for u in us)),
                   "latency_s": round(sum(stats[u][2] for u in us), 4)}))
    return records, list(failed.values()), (n_req, n_tok)


def _rewrite_if_truncated(out: Path) -> None:
    """A crash mid-append leaves a cut last line: rewrite the file without it before appending."""
    if out.exists() and out.stat().st_size and not out.read_bytes().endswith(b"\n"):
        write_answers(out, load_answers(out))


def count_requests(questions: list[Question], settings: GenerationSettings) -> int:
    return sum(len(q.turns) for q in questions) * settings.samples
