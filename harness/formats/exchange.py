"""FastChat llm_judge data in and out of the store, so users keep their history.

    import_fastchat(store, "FastChat/fastchat/llm_judge/data")      # questions, answers, judgments
    export_fastchat(store, "out/data", bench="zoo")                 # question.jsonl, model_answer/, model_judgment/

Imported models have no weights here: they are keyed by name (`fastchat:<name>`); their answers by
(model, question, sample) under the generation key `fastchat`. FastChat judges become judges named
`fastchat/<judge model>`, one per judge model, with FastChat's prompt name as the prompt version.
A grade of -1 (FastChat's "could not parse") is imported as missing. Importing twice adds nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from fusion.common.hashing import digest
from harness.formats.fastchat import (
    FastChatData,
    PairJudgment,
    SingleJudgment,
    load_fastchat_dir,
    write_pair_judgments,
    write_single_judgments,
)
from harness.formats.questions import Answer, Choice, Question, write_answers, write_questions
from harness.store import AnswerRow, JudgmentRow, Store

IMPORT_GEN_KEY = "fastchat"


@dataclass
class ImportReport:
    benches: list[str] = field(default_factory=list)
    questions: int = 0
    models: int = 0
    answers: int = 0
    judgments: int = 0
    missing: int = 0
    skipped: int = 0  # judgments whose answer is not in the data (nothing to attach them to)


def fastchat_model_hash(name: str) -> str:
    return digest("fastchat-model", name)


def import_fastchat(store: Store, source: str | Path | FastChatData, run_id: str | None = None) -> ImportReport:
    """Load every bench of a FastChat data directory (or its `load_fastchat_dir` result) into the store; returns
    what was new."""
    data = source if isinstance(source, FastChatData) else load_fastchat_dir(source)
    rep = ImportReport()
    for bench in data.benches.values():
        rep.benches.append(bench.name)
        questions = _with_references(bench.questions, bench.references)
        qkeys = store.add_questions(bench.name, questions)
        rep.questions += len(questions)
        akeys: dict[tuple[str, object, int], str] = {}
        rows = []
        for model, answers in bench.answers.items():
            h = store.add_model(model, content_hash=fastchat_model_hash(model))
            rep.models += 1
            for a in answers:
                if a.question_id not in qkeys:
                    rep.skipped += 1
                    continue
                for ch in a.choices:
                    row = AnswerRow(h, qkeys[a.question_id], ch.index, IMPORT_GEN_KEY, ch.turns,
                                    meta={"answer_id": a.answer_id, "model_id": a.model_id, "tstamp": a.tstamp})
                    akeys[(model, a.question_id, ch.index)] = row.akey
                    rows.append(row)
        rep.answers += store.add_answers(rows, run_id)
        judgments = []
        for judge_name, records in bench.single.items():
            for s in records:
                akey = akeys.get((s.model, s.question_id, 0))
                if akey is None:
                    rep.skipped += 1
                    continue
                judgments.append(JudgmentRow("single", f"fastchat/{s.judge[0]}", s.judge[1], akey, s.turn,
                                             score=None if s.score is None else float(s.score),
                                             detail={"user_prompt": s.user_prompt, "judgment": s.judgment,
                                                     "file": judge_name}))
        for judge_name, pair_records in bench.pair.items():
            for p in pair_records:
                k1, k2 = akeys.get((p.model_1, p.question_id, 0)), akeys.get((p.model_2, p.question_id, 0))
                if k1 is None or k2 is None:
                    rep.skipped += 1
                    continue
                outcome = p.outcome
                first, second = (k1, k2) if k1 < k2 else (k2, k1)
                side: dict[str | None, str | None] = {"model_1": "A" if first == k1 else "B",
                                                      "model_2": "A" if first == k2 else "B"}
                judgments.append(JudgmentRow(
                    "pair", f"fastchat/{p.judge[0]}", p.judge[1], first, p.turn or 1, akey_b=second,
                    winner=side.get(outcome, outcome),
                    detail={"g1": {"user_prompt": p.g1_user_prompt, "judgment": p.g1_judgment},
                            "g2": {"user_prompt": p.g2_user_prompt, "judgment": p.g2_judgment},
                            "fastchat": {"model_1": p.model_1, "model_2": p.model_2, "g1_winner": p.g1_winner,
                                         "g2_winner": p.g2_winner}, "file": judge_name}))
        rep.missing += sum(1 for j in judgments if j.score is None and j.winner is None)
        rep.judgments += store.add_judgments(judgments, run_id)
    return rep


def _with_references(questions: list[Question], references: dict[str, list[Answer]]) -> list[Question]:
    """Questions carrying the reference answers of FastChat's reference_answer/<judge>.jsonl."""
    refs: dict = {}
    for answers in references.values():
        for a in answers:
            refs.setdefault(a.question_id, a.choices[0].turns)
    return [q if q.reference is not None or q.question_id not in refs
            else q.model_copy(update={"reference": refs[q.question_id][:len(q.turns)]}) for q in questions]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", name).strip("._") or "model"


def export_fastchat(store: Store, out_dir: str | Path, bench: str) -> list[Path]:
    """Write a bench from the store in FastChat's layout under out_dir/<bench>/; returns the files written."""
    root = Path(out_dir) / bench
    db = store.db
    rows = db.execute("SELECT b.question_id, q.category, q.turns, b.reference, b.extra, b.checks FROM bench_questions "
                      "b "
                      "JOIN questions q ON b.qkey=q.qkey WHERE b.bench=? ORDER BY b.rowid", (bench,)).fetchall()
    if not rows:
        from fusion.common.errors import FusevalError  # noqa: PLC0415

        raise FusevalError(f"{store.path}: no questions stored under bench {bench!r}")
    questions = [Question(question_id=json.loads(r[0]), category=r[1], turns=json.loads(r[2]),
                          reference=json.loads(r[3]) if r[3] else None, checks=json.loads(r[5]) if r[5] else None,
                          **json.loads(r[4] or "{}")) for r in rows]
    written = [root / "question.jsonl"]
    write_questions(written[0], questions)
    names = store.model_names()
    by_model: dict[str, dict] = {}
    for _akey, qid, mh, sample, turns, _meta, ts in db.execute(
            "SELECT a.akey, b.question_id, a.model_hash, a.sample, a.turns, a.meta, a.tstamp FROM answers a "
            "JOIN bench_questions b ON a.qkey=b.qkey WHERE b.bench=? ORDER BY b.rowid, a.sample", (bench,)):
        model = _safe(names[mh])
        rec = by_model.setdefault(model, {}).setdefault(json.loads(qid), {"choices": [], "tstamp": ts})
        rec["choices"].append(Choice(index=sample, turns=json.loads(turns)))
    for model, per_q in by_model.items():
        path = root / "model_answer" / f"{model}.jsonl"
        write_answers(path, [Answer(question_id=qid, answer_id=digest("export", model, qid)[:22], model_id=model,
                                    choices=r["choices"], tstamp=r["tstamp"]) for qid, r in per_q.items()])
        written.append(path)
    written += _export_judgments(store, root, bench, names)
    return written


def _judge_model(judge: str) -> str:
    """`llm/<name>@hash/...` -> name; `fastchat/<model>` -> model; `programmatic/...` -> programmatic."""
    parts = judge.split("/")
    return _safe(parts[1].split("@")[0] if len(parts) > 1 and parts[0] in ("llm", "fastchat") else parts[0])


def _export_judgments(store: Store, root: Path, bench: str, names: dict[str, str]) -> list[Path]:
    single: dict[str, list[SingleJudgment]] = {}
    pair: dict[str, list[PairJudgment]] = {}
    q = ("SELECT j.kind, j.judge, j.prompt_version, j.turn, j.score, j.winner, j.detail, j.tstamp, b.question_id, "
         "a.model_hash, ab.model_hash FROM judgments j JOIN answers a ON j.akey=a.akey "
         "LEFT JOIN answers ab ON j.akey_b=ab.akey JOIN bench_questions b ON b.qkey=a.qkey "
         "WHERE b.bench=? AND j.repeat=0 AND a.sample=0 ORDER BY j.rowid")
    for kind, judge, pv, turn, score, winner, detail, ts, qid, mh, mh_b in store.db.execute(q, (bench,)):
        d = json.loads(detail) if detail else {}
        jm = _judge_model(judge)
        if kind == "single":
            single.setdefault(jm, []).append(SingleJudgment(
                question_id=json.loads(qid), model=_safe(names[mh]), judge=(jm, pv),
                user_prompt=d.get("user_prompt") or "", judgment=d.get("judgment") or d.get("detail") or "",
                score=score, turn=turn, tstamp=ts))
        else:
            side = {"A": "model_1", "B": "model_2", "tie": "tie", None: "error"}
            w1, w2 = side.get(d.get("g1_winner", winner), "error"), side.get(d.get("g2_winner", winner), "error")
            if "g1_winner" not in d and "fastchat" in d and d["fastchat"]["model_1"] == _safe(names[mh]):
                w1, w2 = d["fastchat"]["g1_winner"], d["fastchat"]["g2_winner"]  # imported, same model order
            g1, g2 = d.get("g1") or {}, d.get("g2") or {}
            pair.setdefault(jm, []).append(PairJudgment(
                question_id=json.loads(qid), model_1=_safe(names[mh]), model_2=_safe(names[mh_b]),
                g1_winner=w1, g2_winner=w2, judge=(jm, pv), g1_user_prompt=g1.get("user_prompt") or "",
                g1_judgment=g1.get("judgment") or "", g2_user_prompt=g2.get("user_prompt") or "",
                g2_judgment=g2.get("judgment") or "", turn=turn, tstamp=ts))
    written = []
    for jm, recs in single.items():
        written.append(root / "model_judgment" / f"{jm}_single.jsonl")
        write_single_judgments(written[-1], recs)
    for jm, pair_recs in pair.items():
        written.append(root / "model_judgment" / f"{jm}_pair.jsonl")
        write_pair_judgments(written[-1], pair_recs)
    return written

