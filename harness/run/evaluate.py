"""Generation and judging through the store: only missing work is done, and each batch lands whole.

    store = Store("runs/fuseval.db")
    model = store.add_model("pivot", path=model_dir)
    generate_into_store(store, backend, model, "zoo", questions, settings)
    judge_single_into_store(store, ProgrammaticJudge(), model, "zoo", questions, settings.digest())

A run killed at any point resumes from the store: answers go in per chunk of questions (all samples
of a question together), judgments per chunk of items, each chunk one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.backends.base import Backend
from harness.formats.questions import Question
from harness.judges.base import Judge, PairItem, SingleItem
from harness.run.generate import GenerationReport, GenerationSettings, answer_chunk
from harness.store import AnswerRow, JudgmentRow, Store


def generate_into_store(store: Store, backend: Backend, model_hash: str, bench: str, questions: list[Question],
                        settings: GenerationSettings, run_id: str | None = None, chunk_size: int = 32,
                        on_request: Callable[[int], None] | None = None) -> GenerationReport:
    """Answer every (question, sample) this model has not answered with these settings."""
    t0 = time.perf_counter()
    qkeys = store.add_questions(bench, questions)
    gen_key = settings.digest()
    done = store.answered(model_hash, gen_key)
    todo = [q for q in questions if any((qkeys[q.question_id], s) not in done for s in range(settings.samples))]
    rep = GenerationReport(questions=len(questions), already_done=len(questions) - len(todo))
    failed: set = set()
    for c in range(0, len(todo), chunk_size):
        records, errors, (n_req, n_tok) = answer_chunk(backend, todo[c:c + chunk_size], settings, on_request)
        rows = [AnswerRow(model_hash, qkeys[a.question_id], ch.index, gen_key, ch.turns,
                          meta={"backend": backend.kind, "temperature": a.temperature, "chat_template": a.chat_template,
                                "model_id": a.model_id, "usage": getattr(ch, "usage", None),
                                "context_full_turns": getattr(ch, "context_full_turns", None)})
                for a in records for ch in a.choices]
        store.add_answers(rows, run_id)
        failed |= {e["question_id"] for e in errors}
        rep.first_error = rep.first_error or (errors[0]["error"] if errors else None)
        rep.answered += len(records)
        rep.requests += n_req
        rep.completion_tokens += n_tok
    rep.failed = len(failed)
    rep.wall_s = time.perf_counter() - t0
    return rep


@dataclass
class JudgeReport:
    items: int = 0          # judgments this judge owes these answers
    already: int = 0        # found in the store
    judged: int = 0         # new ones stored
    missing: int = 0        # stored as missing (unreadable verdict), among the new ones
    errors: int = 0         # the judge could not be asked; not stored, retried next run
    wall_s: float = 0.0
    first_error: str | None = None


def _single_units(store: Store, judge: Judge, model_hash: str, bench: str, questions: list[Question],
                  gen_key: str | None, repeats: int) -> list[tuple[JudgmentRow, SingleItem]]:
    by_id = {q.question_id: q for q in questions}
    units = []
    for a in store.answers(model_hash, bench, gen_key):
        q = by_id.get(a["question_id"])
        if q is None:
            continue  # answered under an older version of the set
        for turn in range(1, min(len(q.turns), len(a["turns"])) + 1):
            if not judge.applies(q, turn):
                continue
            for r in range(repeats):
                row = JudgmentRow("single", judge.id, "", a["akey"], turn, repeat=r,
                                  ref_version=judge.ref_version(q, turn))
                units.append((row, SingleItem(q, a["turns"], turn, r)))
    return units


def judge_single_into_store(store: Store, judge: Judge, model_hash: str, bench: str, questions: list[Question],
                            gen_key: str | None = None, repeats: int = 1, run_id: str | None = None,
                            chunk_size: int = 64, on_done: Callable[[int], None] | None = None) -> JudgeReport:
    """Grade every answered turn of this model that `judge` has not graded yet."""
    store.add_questions(bench, questions)
    units = _single_units(store, judge, model_hash, bench, questions, gen_key, repeats)
    return _judge_units(store, units, judge.single, run_id, chunk_size, on_done)


def pending_single(store: Store, judge: Judge, model_hash: str, bench: str, questions: list[Question],
                   gen_key: str | None = None, repeats: int = 1) -> int:
    """How many judgments `judge_single_into_store` would ask for (nothing is started or asked)."""
    return _pending(store, _single_units(store, judge, model_hash, bench, questions, gen_key, repeats))


def _pair_units(store: Store, judge, model_a: str, model_b: str, bench: str, questions: list[Question],
                gen_key: str | None, repeats: int) -> list[tuple[JudgmentRow, PairItem]]:
    by_id = {q.question_id: q for q in questions}
    b_answers = {(a["question_id"], a["sample"]): a for a in store.answers(model_b, bench, gen_key)}
    units = []
    for a in store.answers(model_a, bench, gen_key):
        b = b_answers.get((a["question_id"], a["sample"]))
        q = by_id.get(a["question_id"])
        if b is None or q is None:
            continue
        first, second = (a, b) if a["akey"] < b["akey"] else (b, a)  # one key whichever order was asked
        for turn in range(1, min(len(q.turns), len(first["turns"]), len(second["turns"])) + 1):
            for r in range(repeats):
                row = JudgmentRow("pair", judge.id, "", first["akey"], turn, akey_b=second["akey"], repeat=r,
                                  ref_version=judge.ref_version(q, turn))
                units.append((row, PairItem(q, first["turns"], second["turns"], turn, r)))
    return units


def judge_pairs_into_store(store: Store, judge, model_a: str, model_b: str, bench: str, questions: list[Question],
                           gen_key: str | None = None, repeats: int = 1, run_id: str | None = None,
                           chunk_size: int = 32, on_done: Callable[[int], None] | None = None) -> JudgeReport:
    """Compare the two models' answers (same question, same sample) turn by turn, in both orders."""
    store.add_questions(bench, questions)
    units = _pair_units(store, judge, model_a, model_b, bench, questions, gen_key, repeats)
    return _judge_units(store, units, judge.pair, run_id, chunk_size, on_done)


def pending_pairs(store: Store, judge, model_a: str, model_b: str, bench: str, questions: list[Question],
                  gen_key: str | None = None, repeats: int = 1) -> int:
    """How many judgments `judge_pairs_into_store` would ask for (nothing is started or asked)."""
    return _pending(store, _pair_units(store, judge, model_a, model_b, bench, questions, gen_key, repeats))


def _pending(store: Store, units: list) -> int:
    """How many of these judgment units the store does not hold yet."""
    return len(units) - len(store.judged(r.jkey for r, _ in units))


def _judge_units(store: Store, units: list, ask: Callable, run_id: str | None, chunk_size: int,
                 on_done: Callable[[int], None] | None) -> JudgeReport:
    t0 = time.perf_counter()
    existing = store.judged(r.jkey for r, _ in units)
    todo = [(r, it) for r, it in units if r.jkey not in existing]
    rep = JudgeReport(items=len(units), already=len(units) - len(todo))
    for c in range(0, len(todo), chunk_size):
        chunk = todo[c:c + chunk_size]
        verdicts = ask([it for _, it in chunk], on_done=on_done)
        rows = []
        for (row, _), v in zip(chunk, verdicts):
            if v.error is not None:
                rep.errors += 1
                rep.first_error = rep.first_error or v.error
                continue
            row.score, row.winner, row.prompt_version, row.detail = v.score, v.winner, v.prompt_version, v.detail
            rep.missing += (v.score is None and v.winner is None)
            rows.append(row)
        rep.judged += store.add_judgments(rows, run_id)
    rep.wall_s = time.perf_counter() - t0
    return rep

