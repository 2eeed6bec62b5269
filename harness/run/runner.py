"""`fuseval run SUITE.yml`: build what is missing, serve each model in turn, answer, judge, compare.

    ls = load_suite("benchmarks/suites/demo.yml")
    run_id = run_suite(ls, workspace=Path("runs/demo"), store=Store("runs/demo/fuseval.db"))

Every step goes through the store, so a second run of the same suite does no new generation or
judging, and an interrupted one resumes. Built models are keyed by the content of their recipe
and inputs (`workspace/models/`, `workspace/fused/`; see harness/run/build.py): a rebuilt recipe is
reused, a changed one is built anew beside it. Models are served one after another; a model whose
answers are all in the store is not started at all.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fusion.common.errors import FusevalError
from harness.analysis.results import record_results
from harness.formats.questions import Question, load_questions, resolve_bench, take_spread
from harness.run.build import Built, Say, build_models
from harness.run.generate import GenerationSettings
from harness.run.resolve import backend_options, bench_name, judge_identity, judges_for
from harness.run.suite import BenchSpec, LoadedSuite
from harness.store import Store

log = logging.getLogger(__name__)


@dataclass
class Bench:
    name: str
    spec: BenchSpec
    questions: list[Question]
    judges: list[str]          # programmatic and/or llm


# -- benches, generation, judging ------------------------------------------------------------


def load_benches(ls: LoadedSuite) -> list[Bench]:
    out = []
    for spec in ls.benches:
        if spec.lmeval is not None:
            out.append(Bench(spec.name or "lmeval", spec, [], []))
            continue
        try:
            qpath = resolve_bench(spec.questions)
            questions = take_spread(load_questions(qpath), spec.limit)
        except FusevalError as e:
            raise FusevalError(f"{ls.path}: benchmarks: {e}") from None
        name = bench_name(spec.questions, qpath, spec.name)
        has_checks = any(q.checks for q in questions)
        judges = judges_for(spec.judge, questions)
        if "programmatic" in judges and not has_checks:
            raise FusevalError(f"{ls.path}: benchmark {name!r}: judge programmatic, but its questions carry no checks")
        if "llm" in judges and not ls.suite.judge.model:
            raise FusevalError(f"{ls.path}: benchmark {name!r} is judged by an LLM: set judge.model")
        out.append(Bench(name, spec, questions, judges))
    if len({b.name for b in out}) != len(out):
        raise FusevalError(f"{ls.path}: two benchmarks share a name; give them distinct `name`s")
    return out


def _options(spec, backend: str) -> dict:
    return backend_options(backend, spec.options, spec.base_url, spec.api_key_env)


class Progress:
    """What the runner reports its progress to: one phase at a time, advanced by requests. This one is silent."""

    def phase(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def _pending_requests(store: Store, b: Built, bench: Bench, settings: GenerationSettings) -> int:
    from harness.store import question_key

    done = store.answered(b.hash, settings.digest())
    return sum(len(q.turns) for q in bench.questions for s in range(settings.samples)
               if (question_key(q.category, q.turns), s) not in done)


def generate_all(ls: LoadedSuite, store: Store, built: list[Built], benches: list[Bench], backend: str,
                 workspace: Path, run_id: str, say: Say, progress: Progress = Progress()) -> dict[str, int]:
    """Answer every question bench with every model; lm-eval tasks on the same backend. Returns counts."""
    from harness.backends import make_backend
    from harness.run.evaluate import generate_into_store

    settings = ls.suite.generation
    opts = _options(ls.suite.backend, backend)
    qbenches = [b for b in benches if b.questions]
    lbenches = [b for b in benches if b.spec.lmeval]
    counts = {"answered": 0, "started": 0, "lmeval": 0}
    for b in built:
        for bench in qbenches:
            store.add_questions(bench.name, bench.questions)
        lm_todo = [lb for lb in lbenches if not _lmeval_done(store, b, lb)]
        if not any(_pending_requests(store, b, bench, settings) for bench in qbenches) and not lm_todo:
            continue
        counts["started"] += 1
        say(f"serve {b.name} ({backend})")
        server = make_backend(backend, b.path, opts, model_id=b.name, log_dir=workspace / "logs",
                              where=f"{ls.path}: backend.options")
        with server:
            for bench in qbenches:
                progress.phase(f"generate {b.name} · {bench.name}", _pending_requests(store, b, bench, settings))
                rep = generate_into_store(store, server, b.hash, bench.name, bench.questions, settings, run_id=run_id,
                                          on_request=progress.advance)
                counts["answered"] += rep.answered
                if rep.failed:
                    raise FusevalError(f"{b.name} on {bench.name}: {rep.failed} questions failed to generate "
                                       f"(first error: {rep.first_error}); run the suite again to retry them")
            for lb in lm_todo:
                progress.phase(f"lm-eval {b.name} · {', '.join(lb.spec.lmeval)}", None)
                _run_lmeval(store, b, lb, backend, server, workspace, run_id)
                counts["lmeval"] += 1
    return counts


def _lmeval_key(spec: BenchSpec) -> str:
    from harness.run.lmeval import task_key

    return task_key(spec.lmeval, spec.limit, spec.num_fewshot)


def _lmeval_done(store: Store, b: Built, lb: Bench) -> bool:
    return all(store.has_metrics(b.hash, f"{t}@{_lmeval_key(lb.spec)}") for t in lb.spec.lmeval)


def _run_lmeval(store: Store, b: Built, lb: Bench, backend: str, server, workspace: Path, run_id: str) -> None:
    """lm-eval's tasks (and their subtasks) on this model, on the same backend; metrics keyed by the task settings."""
    from harness.run.lmeval import run_lmeval

    base_url = getattr(server, "base_url", None) if backend == "vllm" else None
    if backend == "openai":
        raise FusevalError(f"{lb.name}: lm-eval tasks need a local model (transformers or vllm backend)")
    rows = run_lmeval(Path(b.path), lb.spec.lmeval, backend="vllm" if base_url else "transformers",
                      base_url=base_url, served_name=b.name, limit=lb.spec.limit, num_fewshot=lb.spec.num_fewshot,
                      work_dir=workspace / "lmeval")
    key = _lmeval_key(lb.spec)
    for task in sorted({r["task"] for r in rows} | set(lb.spec.lmeval)):
        mine = [r for r in rows if r["task"] == task]
        store.add_metrics(run_id, b.hash, f"{task}@{key}", mine or [{"metric": "none"}])


def judge_all(ls: LoadedSuite, store: Store, built: list[Built], benches: list[Bench], workspace: Path, run_id: str,
              say: Say, progress: Progress = Progress()) -> dict[str, Any]:
    """Judge every model's answers: programmatic checks, then the LLM judge (started once)."""
    from harness.judges.programmatic import ProgrammaticJudge
    from harness.run.evaluate import judge_pairs_into_store, judge_single_into_store, pending_single

    gen_key = ls.suite.generation.digest()
    judges: dict[str, list[str]] = {b.name: [] for b in benches}
    counts = {"judged": 0, "missing": 0, "errors": 0}

    def tally(rep):
        counts["judged"] += rep.judged
        counts["missing"] += rep.missing
        counts["errors"] += rep.errors

    prog = ProgrammaticJudge()
    for bench in benches:
        if "programmatic" in bench.judges:
            judges[bench.name].append(prog.id)
            for b in built:
                tally(judge_single_into_store(store, prog, b.hash, bench.name, bench.questions, gen_key, run_id=run_id))
    llm_benches = [b for b in benches if "llm" in b.judges]
    if llm_benches:
        judge = _llm_judge(ls, store, workspace)
        work = [(bench, b, n) for bench in llm_benches for b in built
                if (n := pending_single(store, judge, b.hash, bench.name, bench.questions, gen_key,
                                        ls.suite.judge.repeats))]
        for bench in llm_benches:
            judges[bench.name].append(judge.id)
        pairs = _order_check_work(ls, store, judge, built, llm_benches, gen_key)
        if work or pairs:  # the judge is started only when it has something to grade
            say(f"judge {judge.id}: {len(work)} model x bench pairs to grade"
                + (f", {len(pairs)} order checks" if pairs else ""))
            with judge.backend:
                for bench, b, n in work:
                    progress.phase(f"judge {b.name} · {bench.name}", n)
                    tally(judge_single_into_store(store, judge, b.hash, bench.name, bench.questions, gen_key,
                                                  repeats=ls.suite.judge.repeats, run_id=run_id,
                                                  on_done=progress.advance))
                for bench, qs, b, base, n in pairs:
                    progress.phase(f"order check {b.name} vs {base.name} · {bench.name}", n)
                    tally(judge_pairs_into_store(store, judge, b.hash, base.hash, bench.name, qs, gen_key,
                                                 run_id=run_id, on_done=progress.advance))
    if counts["errors"]:
        raise FusevalError(f"{counts['errors']} judgments could not be asked (the judge failed); run the suite "
                           "again to retry them")
    return {"counts": counts, "judges": judges}


def _order_check_work(ls: LoadedSuite, store: Store, judge, built: list[Built], benches: list[Bench],
                      gen_key: str) -> list[tuple]:
    """(bench, questions, candidate, baseline, pending) for judge.order_check: each candidate against the first
    baseline, both orders, on the first N questions of each LLM-judged bench (spread over its categories)."""
    from harness.formats.questions import take_spread
    from harness.run.evaluate import pending_pairs

    n_q = ls.suite.judge.order_check
    base = next((b for b in built if b.role == "baseline"), None)
    if not n_q or base is None:
        return []
    out = []
    for bench in benches:
        qs = take_spread(bench.questions, n_q)
        for b in built:
            if b.role == "candidate" and (n := pending_pairs(store, judge, b.hash, base.hash, bench.name, qs, gen_key)):
                out.append((bench, qs, b, base, n))
    return out


def _llm_judge(ls: LoadedSuite, store: Store, workspace: Path):
    from harness.backends import default_backend, make_backend
    from harness.judges.llm import LLMJudge

    j = ls.suite.judge
    kind = j.backend or default_backend()
    if kind != "openai" and not Path(j.model).is_dir():
        raise FusevalError(f"{ls.path}: judge.model {j.model}: no such model directory")
    label, ident = judge_identity(store, kind, j.model, j.base_url, j.name)
    backend = make_backend(kind, j.model, _options(j, kind), model_id=label, log_dir=workspace / "logs",
                           where=f"{ls.path}: judge.options")
    return LLMJudge(backend, ident, temperature=j.temperature, max_new_tokens=j.max_new_tokens,
                    structured=j.structured)


# -- the run ----------------------------------------------------------------------------------


def run_suite(ls: LoadedSuite, workspace: Path, store: Store, backend: str | None = None,
              say: Say = lambda s: None, progress: Progress = Progress()) -> str:
    """Build, generate, judge, and record the run (its config names every model and judge); returns the run id."""
    from harness.backends import default_backend

    workspace = Path(workspace)
    kind = backend or ls.suite.backend.kind or default_backend()
    benches = load_benches(ls)
    run_id = store.start_run(suite=ls.suite.name, config={"suite_file": str(ls.path)})
    try:
        built = build_models(ls, store, workspace, kind, say)
        gen = generate_all(ls, store, built, benches, kind, workspace, run_id, say, progress)
        say(f"answers: {gen['answered']} questions answered, {gen['started']} of {len(built)} models had work")
        jud = judge_all(ls, store, built, benches, workspace, run_id, say, progress)
        c = jud["counts"]
        say(f"judgments: {c['judged']} new ({c['missing']} unreadable, stored as missing)")
    except BaseException:
        store.end_run(run_id, status="failed")
        raise
    config = {"suite_file": str(ls.path), "suite": ls.suite.model_dump(mode="json"), "backend": kind,
              "workspace": str(workspace), "models": [asdict(b) | {"recipe": None} for b in built],
              "recipes": {b.name: b.recipe for b in built if b.recipe},
              "benches": [{"name": b.name, "judge_ids": jud["judges"].get(b.name, []), "lmeval": b.spec.lmeval,
                           "lmeval_key": _lmeval_key(b.spec) if b.spec.lmeval else None,
                           "question_ids": [q.question_id for q in b.questions]} for b in benches],
              "grids": ls.grids, "gen_key": ls.suite.generation.digest(),
              "counts": {**gen, **jud["counts"]}}
    record_results(store, run_id, config)
    store.end_run(run_id, config=config)
    return run_id

