"""`fuseval generate`: answer a question set into a FastChat answer file (no store)."""

from __future__ import annotations

from pathlib import Path

import typer

from fusion.common.errors import FusevalError
from harness.cli.app import app
from harness.cli.options import backend_options
from harness.ui import console, progress, quiet_libraries


@app.command()
def generate(
    model: str = typer.Argument(..., help="Model directory (vllm, transformers) or the served model name (openai)."),
    bench: str = typer.Option("general", "--bench", help="Question set: general, zoo, a question.jsonl, or a directory "
                                                         "holding one."),
    out: Path = typer.Option(..., "--out", help="Answer file to write (FastChat model_answer jsonl); an existing one "
                                                "is resumed."),
    backend: str = typer.Option(None, "--backend", help="vllm, transformers or openai (default: vllm if installed, "
                                                        "else transformers)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Answer only the first N questions."),
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1, help="Upper bound on each turn's answer."),
    samples: int = typer.Option(1, "--samples", min=1, help="Answers per question, each with its own seed."),
    temperature: float = typer.Option(None, "--temperature", min=0, help="One temperature for all categories (default: "
                                                                         "per category)."),
    seed: int = typer.Option(0, "--seed", help="Base seed of the per-question sampling seeds."),
    model_id: str = typer.Option(None, "--model-id", help="Name the answers are filed under (default: the model "
                                                          "directory's name)."),
    chat_template: Path = typer.Option(None, "--chat-template", help="Jinja chat template file to use instead of the "
                                                                     "model's own."),
    base_url: str = typer.Option(None, "--base-url", help="openai: the endpoint, e.g. http://127.0.0.1:8000/v1."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="openai: name of the environment variable holding the "
                                                                "API key."),
    concurrency: int = typer.Option(None, "--concurrency", min=1, help="vllm/openai: requests in flight at once."),
    device: str = typer.Option(None, "--device", help="transformers: auto, cpu or cuda."),
    log_dir: Path = typer.Option(None, "--log-dir", help="vllm: where the server log goes (default: beside --out)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Backend option KEY=VALUE (repeatable), e.g. -o "
                                                                "max_model_len=2048 -o tensor_parallel_size=2."),
) -> None:
    """Answer a multi-turn question set with a model; resumable, failures retried on the next run."""
    from harness.backends import default_backend, make_backend
    from harness.formats.questions import load_questions, resolve_bench
    from harness.run.generate import GenerationSettings, count_requests, generate_answers, pending

    kind = backend or default_backend()
    opts = backend_options(kind, option, base_url=base_url, api_key_env=api_key_env, chat_template=chat_template,
                           concurrency=concurrency, device=device)
    qpath = resolve_bench(bench)
    questions = load_questions(qpath)[:limit]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, samples=samples, temperature=temperature, seed=seed)
    model_id = model_id or (model if kind == "openai" else Path(model).resolve().name)
    todo = pending(questions, out, model_id, settings)
    if not todo:
        console.print(f"{out}: all {len(questions)} questions already answered by {model_id}")
        return
    quiet_libraries()
    b = make_backend(kind, model, opts, model_id=model_id, log_dir=log_dir or out.parent / "logs",
                     where="--option/backend options")
    with progress() as prog:
        task = prog.add_task(f"{kind}: starting {model_id}", total=None)
        with b:
            prog.update(task, description=f"generate ({model_id}, {qpath.parent.name})",
                        total=count_requests(todo, settings))
            rep = generate_answers(b, questions, out, settings, on_request=lambda n: prog.advance(task, n))
    console.print(f"wrote {out}: {rep.answered} questions answered, {rep.already_done} already there, "
                  f"{rep.failed} failed; {rep.completion_tokens} tokens in {rep.wall_s:.1f}s ({rep.tokens_per_s:.0f} "
                  "tok/s)")
    if rep.failed:
        raise FusevalError(f"{rep.failed} questions failed (errors in {rep.failures_path}); run the same command "
                           "again to retry them")
