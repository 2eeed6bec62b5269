"""`fuseval eval`, `fuseval scores`, `fuseval pairwise`: answer, judge and compare through the store.

Everything goes through the store (default runs/fuseval.db): a repeated command does only the work
that is missing, and a killed one resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import typer

from fusion.common.errors import FusevalError
from harness.cli.app import app
from harness.cli.options import STORE_HELP, backend_options
from harness.run import resolve
from harness.ui import console, progress, quiet_libraries, results


def _judge_backend(store, kind: str, model: str, options: dict, log_dir: Path, name: str | None):
    """The judge's backend and its identity in the store (name@content-hash)."""
    from harness.backends import make_backend

    label, ident = resolve.judge_identity(store, kind, model, options.get("base_url"), name)
    b = make_backend(kind, model, options, model_id=label, log_dir=log_dir,
                     where="--judge-option/judge backend options")
    return b, ident


def _register_model(store, kind: str, model: str, name: str | None, base_url: str | None) -> tuple[str, str]:
    if kind == "openai":
        name = name or model
        return name, store.add_model(name, content_hash=resolve.endpoint_hash(base_url, model))
    if not Path(model).is_dir():
        raise FusevalError(f"{model}: no such model directory")
    name = name or Path(model).resolve().name
    return name, store.add_model(name, path=model)


@app.command("eval")
def eval_(
    model: str = typer.Argument(..., help="Model directory (vllm, transformers) or the served model name (openai)."),
    bench: str = typer.Option("zoo", "--bench", help="Question set: zoo, general, a question.jsonl, or a directory "
                                                     "holding one."),
    name: str = typer.Option(None, "--name", help="Name of the model in the store and reports (default: the "
                                                  "directory's name)."),
    backend: str = typer.Option(None, "--backend", help="Serves the model: vllm, transformers or openai (default: vllm "
                                                        "if installed, else transformers)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Backend option KEY=VALUE (repeatable)."),
    base_url: str = typer.Option(None, "--base-url", help="openai: the endpoint serving MODEL."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="openai: environment variable holding its API key."),
    judge: list[str] = typer.Option([], "--judge", help="programmatic and/or llm (repeatable); default: programmatic "
                                                        "for sets with checks, else llm."),
    judge_model: str = typer.Option(None, "--judge-model", help="llm judge: model directory or served model name."),
    judge_backend: str = typer.Option(None, "--judge-backend", help="llm judge: vllm, transformers or openai (default "
                                                                    "as --backend)."),
    judge_option: list[str] = typer.Option([], "--judge-option",
                                           help="llm judge backend option KEY=VALUE (repeatable)."),
    judge_base_url: str = typer.Option(None, "--judge-base-url", help="llm judge on an openai endpoint: its URL."),
    judge_api_key_env: str = typer.Option(None, "--judge-api-key-env", help="llm judge on an openai endpoint: env var "
                                                                            "with the key."),
    judge_name: str = typer.Option(None, "--judge-name", help="Name of the judge model in judgments (default: its "
                                                              "directory's name)."),
    structured: bool = typer.Option(None, "--structured/--no-structured",
                                    help="Ask the judge for schema-constrained JSON (default: where the backend can)."),
    judge_repeats: int = typer.Option(1, "--judge-repeats", min=1, help="Judge each answer this many times (measures "
                                                                        "judge noise)."),
    judge_max_new_tokens: int = typer.Option(1024, "--judge-max-new-tokens", min=1, help="Upper bound on a judgment's "
                                                                                         "length."),
    judge_temperature: float = typer.Option(0.0, "--judge-temperature", min=0, help="Judge sampling temperature."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use only N questions, taken from every category in turn."),
    samples: int = typer.Option(1, "--samples", min=1, help="Answers per question."),
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1, help="Upper bound on each turn's answer."),
    temperature: float = typer.Option(None, "--temperature", min=0, help="One temperature for all categories (default: "
                                                                         "per category)."),
    seed: int = typer.Option(0, "--seed", help="Base seed of the sampling seeds."),
    store_path: Path = typer.Option(Path("runs/fuseval.db"), "--store", help=STORE_HELP),
    log_dir: Path = typer.Option(Path("runs/logs"), "--log-dir", help="vllm: where server logs go."),
    chunk_size: int = typer.Option(32, "--chunk-size", min=1, help="Questions (or judgments) per stored batch."),
) -> None:
    """Answer a question set with a model and judge the answers, all through the store; prints scores with intervals."""
    from harness.analysis.summary import print_scores
    from harness.backends import default_backend, make_backend
    from harness.formats.questions import load_questions, resolve_bench, take_spread
    from harness.judges.llm import LLMJudge
    from harness.judges.programmatic import ProgrammaticJudge
    from harness.run.evaluate import generate_into_store, judge_single_into_store
    from harness.run.generate import GenerationSettings, count_requests
    from harness.store import Store, exclusive

    qpath = resolve_bench(bench)
    bench_name = resolve.bench_name(bench, qpath)
    questions = take_spread(load_questions(qpath), limit)
    judges = judge or resolve.judges_for("auto", questions)
    if unknown := set(judges) - {"programmatic", "llm"}:
        raise FusevalError(f"--judge {sorted(unknown)[0]!r}: choose programmatic or llm")
    if "llm" in judges and not judge_model:
        raise FusevalError(f"{qpath}: judging with an LLM needs --judge-model (a model directory or a served name)")
    kind = backend or default_backend()
    opts = backend_options(kind, option, base_url=base_url, api_key_env=api_key_env)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, samples=samples, temperature=temperature, seed=seed)
    quiet_libraries()
    with exclusive(store_path, "eval"), Store(store_path) as store:
        run_id = store.start_run(suite=f"eval {model} on {bench_name}")
        name, model_hash = _register_model(store, kind, model, name, base_url)
        b = make_backend(kind, model, opts, model_id=name, log_dir=log_dir, where="--option/backend options")
        with progress() as prog:
            task = prog.add_task(f"{kind}: starting {name}", total=None)
            with b:
                prog.update(task, description=f"generate ({name}, {bench_name})",
                            total=count_requests(questions, settings))
                rep = generate_into_store(store, b, model_hash, bench_name, questions, settings, run_id=run_id,
                                          chunk_size=chunk_size, on_request=lambda n: prog.advance(task, n))
        console.print(f"{name}: {rep.answered} questions answered, {rep.already_done} already in the store, "
                      f"{rep.failed} failed")
        gen_key = settings.digest()
        if "programmatic" in judges:
            jrep = judge_single_into_store(store, ProgrammaticJudge(), model_hash, bench_name, questions, gen_key,
                                           run_id=run_id, chunk_size=chunk_size)
            _report_judging("programmatic", jrep)
        if "llm" in judges:
            jkind = judge_backend or kind
            jopts = backend_options(jkind, judge_option, base_url=judge_base_url, api_key_env=judge_api_key_env,
                                    flag="--judge-")
            jb, ident = _judge_backend(store, jkind, judge_model, jopts, log_dir, judge_name)
            with progress() as prog:
                task = prog.add_task(f"{jkind}: starting judge {ident}", total=None)
                with jb:
                    judge_ = LLMJudge(jb, ident, temperature=judge_temperature, max_new_tokens=judge_max_new_tokens,
                                      structured=structured)
                    prog.update(task, description=f"judge ({ident})", total=None)
                    jrep = judge_single_into_store(store, judge_, model_hash, bench_name, questions, gen_key,
                                                   repeats=judge_repeats, run_id=run_id, chunk_size=chunk_size,
                                                   on_done=lambda n: prog.advance(task, n))
            _report_judging(judge_.id, jrep)
        store.end_run(run_id)
        print_scores(results, store, bench_name, models=[name])
    if rep.failed:
        raise FusevalError(f"{rep.failed} questions failed to generate (first error: {rep.first_error}); "
                           "run the same command again to retry them")


def _report_judging(label: str, rep) -> None:
    console.print(f"judge {label}: {rep.judged} new judgments ({rep.missing} unreadable, stored as missing), "
                  f"{rep.already} already in the store"
                  + (f", {rep.errors} could not be asked (retried next run): {rep.first_error}" if rep.errors else ""))


@app.command()
def scores(
    bench: str = typer.Option("zoo", "--bench", help="Bench name in the store (zoo, general, or a set's directory "
                                                     "name)."),
    baseline: str = typer.Option(None, "--baseline", help="Also show each model's paired difference from this model."),
    model: list[str] = typer.Option([], "--model", help="Only these models (repeatable; default: all)."),
    judge: str = typer.Option(None, "--judge", help="Only judges whose id contains this text."),
    level: float = typer.Option(0.95, "--level", min=0.5, max=0.999, help="Interval level."),
    by_category: bool = typer.Option(True, "--by-category/--overall", help="One row per category, or the overall score "
                                                                           "only."),
    store_path: Path = typer.Option(Path("runs/fuseval.db"), "--store", help="The run store (SQLite) to read."),
) -> None:
    """Scores in the store with 95% intervals (questions resampled as clusters), and differences from a baseline."""
    from harness.analysis.summary import print_scores
    from harness.store import Store

    if not store_path.exists():
        raise FusevalError(f"{store_path}: no store yet; run `fuseval eval` first")
    with Store(store_path) as store:
        if baseline:
            store.model_by_name(baseline)  # a clear error for a name that is not there
        print_scores(results, store, bench, models=model or None, baseline=baseline, judge=judge, level=level,
                     by_category=by_category)


@app.command()
def pairwise(
    models: list[str] = typer.Argument(..., help="Two or more models already answered in the store (by name)."),
    bench: str = typer.Option("zoo", "--bench", help="Question set the answers belong to."),
    judge_model: str = typer.Option(..., "--judge-model", help="Judge: model directory or served model name."),
    judge_backend: str = typer.Option(None, "--judge-backend", help="vllm, transformers or openai (default: vllm if "
                                                                    "installed)."),
    judge_option: list[str] = typer.Option([], "--judge-option", help="Judge backend option KEY=VALUE (repeatable)."),
    judge_base_url: str = typer.Option(None, "--judge-base-url", help="Judge on an openai endpoint: its URL."),
    judge_api_key_env: str = typer.Option(None, "--judge-api-key-env", help="Judge on an openai endpoint: env var with "
                                                                            "the key."),
    judge_name: str = typer.Option(None, "--judge-name", help="Name of the judge model in judgments."),
    structured: bool = typer.Option(None, "--structured/--no-structured", help="Schema-constrained JSON verdicts "
                                                                               "(default: where the backend can)."),
    judge_max_new_tokens: int = typer.Option(1024, "--judge-max-new-tokens", min=1, help="Upper bound on a verdict's "
                                                                                         "length."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use only N questions, taken from every category in turn."),
    store_path: Path = typer.Option(Path("runs/fuseval.db"), "--store", help=STORE_HELP),
    log_dir: Path = typer.Option(Path("runs/logs"), "--log-dir", help="vllm: where server logs go."),
) -> None:
    """Compare models' stored answers two by two with an LLM judge, in both orders; win rates with intervals."""
    from itertools import combinations

    from harness.analysis.summary import print_wins
    from harness.backends import default_backend
    from harness.formats.questions import load_questions, resolve_bench, take_spread
    from harness.judges.llm import LLMJudge
    from harness.run.evaluate import judge_pairs_into_store
    from harness.store import Store, exclusive

    if len(set(models)) < 2:
        raise FusevalError("pairwise needs at least two different models")
    qpath = resolve_bench(bench)
    bench_name = resolve.bench_name(bench, qpath)
    questions = take_spread(load_questions(qpath), limit)
    kind = judge_backend or default_backend()
    opts = backend_options(kind, judge_option, base_url=judge_base_url, api_key_env=judge_api_key_env, flag="--judge-")
    quiet_libraries()
    with exclusive(store_path, "pairwise"), Store(store_path) as store:
        hashes = {m: store.model_by_name(m) for m in models}
        run_id = store.start_run(suite=f"pairwise {' '.join(models)} on {bench_name}")
        jb, ident = _judge_backend(store, kind, judge_model, opts, log_dir, judge_name)
        with progress() as prog, jb:
            judge = LLMJudge(jb, ident, max_new_tokens=judge_max_new_tokens, structured=structured)
            task = prog.add_task(f"judge ({ident})", total=None)
            for a, b in combinations(models, 2):
                rep = judge_pairs_into_store(store, judge, hashes[a], hashes[b], bench_name, questions, run_id=run_id,
                                             on_done=lambda n: prog.advance(task, n))
                _report_judging(f"{a} vs {b}", rep)
        store.end_run(run_id)
        pairs = store.pairs(bench=bench_name, judge=judge.id)
        print_wins(results, pairs[pairs["model_a"].isin(models) & pairs["model_b"].isin(models)])
