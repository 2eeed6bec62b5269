"""The `fuseval` command line: `fuseval merge`, `fuseval demo`, ... (`fuseval --help`)."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from fusion.common.errors import FusevalError

app = typer.Typer(help="Fuse and merge chat LLMs, and measure with honest error bars whether the result got better.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
# No hard wraps: lines stay greppable in CI logs. No markup: paths, model names and messages print as they are
# (`fuseval[lmeval]` is not a style); `error()` colours its label with a Text.
console = Console(stderr=True, soft_wrap=True, markup=False)
# result tables go to stdout, progress and status to stderr; piped tables keep whole cells on one line
results = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200, markup=False)
_state = {"debug": False}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse a byte size: 5GB, 500MB, 2GiB, 1e9 or plain bytes (decimal units, as Hugging Face uses)."""
    m = _SIZE_RE.match(text)
    if not m:
        try:
            return int(float(text))
        except ValueError:
            raise FusevalError(f"cannot read size {text!r}; write e.g. 5GB, 500MB or a number of bytes") from None
    value, unit, suffix = float(m.group(1)), m.group(2).upper(), (m.group(3) or "").upper()
    base = 1024 if suffix == "IB" else 1000
    return int(value * base ** " KMGT".index(unit or " "))


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def merge(
    config: Path = typer.Argument(..., help="Merge recipe (mergekit-style YAML)."),
    out_dir: Path = typer.Argument(..., help="Directory to write the merged model into (created atomically)."),
    dtype: str = typer.Option(None, "--dtype", help="Written dtype (float32, float16, bfloat16); overrides out_dtype."),
    shard_size: str = typer.Option("5GB", "--shard-size", help="Maximum size of one output shard, e.g. 5GB, 500MB."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow loading .bin (pickle) checkpoints: they can run code."),
    device: str = typer.Option("cpu", "--device", help="Where to compute: cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Replace OUT_DIR if it exists."),
    seed: int = typer.Option(None, "--seed", help="Seed for random methods (overrides the config's `seed`)."),
    direct_writes: bool = typer.Option(True, "--direct-writes/--buffered-writes",
                                       help="Write shards with O_DIRECT, past the page cache, where the file system "
                                            "allows (the default), or through the page cache (better on slow or "
                                            "network disks, where the write would wait for the disk)."),
) -> None:
    """Merge Hugging Face checkpoints as a recipe says, streaming tensor by tensor."""
    from fusion.merge import MergeOptions, load_merge_config, run_merge

    if device not in ("cpu", "cuda"):
        raise FusevalError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise FusevalError("--device cuda: no CUDA device is available")
    cfg = load_merge_config(config)
    if seed is not None:
        cfg = cfg.model_copy(update={"seed": seed})
    options = MergeOptions(out_dtype=dtype, shard_bytes=parse_size(shard_size), allow_pickle=allow_pickle,
                           device=device, force=force, direct_writes=direct_writes)
    with _progress() as prog:
        task = prog.add_task(f"merge ({cfg.merge_method})", total=None)

        def on_tensor(name: str, done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        result = run_merge(cfg, out_dir, config_path=config, options=options, progress=on_tensor)
    console.print(f"wrote {result.out_dir}: {result.n_tensors} tensors, {result.total_bytes / 1e6:.1f} MB in "
                  f"{len(result.files)} shard(s), {result.seconds:.2f}s")
    for f in sorted(p.name for p in result.out_dir.iterdir()):
        console.print(f"  {f}")


@app.command()
def fuse(
    config: Path = typer.Argument(..., help="Fusion recipe (YAML: pivot, sources, data, fusion, train, merge, seeds)."),
    out_dir: Path = typer.Argument(..., help="Directory for teachers, targets, merges, controls and fuse_report.json."),
) -> None:
    """FuseChat: fuse each source into the pivot (stage 1), merge the targets (stage 2), train the control."""
    from fusion.pipeline import load_fuse_config, run_fuse

    cfg = load_fuse_config(config)
    report = run_fuse(cfg, out_dir, progress=True)
    for name, st in report["stage1"].items():
        picks = ", ".join(f"{d}: {dict(c)}" for d, c in st["picked"].items())
        console.print(f"stage 1 {name}: transferred {st['transferred_share']:.0%} of response tokens; picked {picks}")
    console.print(f"wrote {out_dir}: " + ", ".join(sorted(p.name for p in Path(out_dir).iterdir() if not p.name.startswith("."))))


def _parse_options(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FusevalError(f"--option {item!r}: write KEY=VALUE, e.g. max_model_len=2048")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else ""
    return out


def backend_options(kind: str, option: list[str], base_url: str | None = None, api_key_env: str | None = None,
                    chat_template: Path | None = None, concurrency: int | None = None, device: str | None = None,
                    flag: str = "--") -> dict:
    """Backend options from the command line's flags, checked against the backend they apply to."""
    opts = _parse_options(option)
    if kind == "openai":
        if not base_url:
            raise FusevalError(f"{flag}backend openai needs {flag}base-url")
        if chat_template:
            raise FusevalError("--chat-template does not apply to an openai backend: the endpoint applies its own template")
        opts.update(base_url=base_url, api_key_env=api_key_env)
    elif base_url or api_key_env:
        raise FusevalError(f"{flag}base-url and {flag}api-key-env apply to {flag}backend openai only")
    if chat_template and not chat_template.is_file():
        raise FusevalError(f"{chat_template}: no such chat template file")
    if chat_template:
        opts["chat_template"] = chat_template
    if concurrency and kind != "transformers":
        opts["concurrency"] = concurrency
    if device:
        if kind != "transformers":
            raise FusevalError(f"{flag}device applies to {flag}backend transformers (vLLM picks its own device)")
        opts["device"] = device
    return opts


def quiet_libraries() -> None:
    """Our progress bars show progress; the libraries' own bars and request logs would interleave."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@app.command()
def generate(
    model: str = typer.Argument(..., help="Model directory (vllm, transformers) or the served model name (openai)."),
    bench: str = typer.Option("general", "--bench", help="Question set: general, zoo, a question.jsonl, or a directory holding one."),
    out: Path = typer.Option(..., "--out", help="Answer file to write (FastChat model_answer jsonl); an existing one is resumed."),
    backend: str = typer.Option(None, "--backend", help="vllm, transformers or openai (default: vllm if installed, else transformers)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Answer only the first N questions."),
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1, help="Upper bound on each turn's answer."),
    samples: int = typer.Option(1, "--samples", min=1, help="Answers per question, each with its own seed."),
    temperature: float = typer.Option(None, "--temperature", min=0, help="One temperature for all categories (default: per category)."),
    seed: int = typer.Option(0, "--seed", help="Base seed of the per-question sampling seeds."),
    model_id: str = typer.Option(None, "--model-id", help="Name the answers are filed under (default: the model directory's name)."),
    chat_template: Path = typer.Option(None, "--chat-template", help="Jinja chat template file to use instead of the model's own."),
    base_url: str = typer.Option(None, "--base-url", help="openai: the endpoint, e.g. http://127.0.0.1:8000/v1."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="openai: name of the environment variable holding the API key."),
    concurrency: int = typer.Option(None, "--concurrency", min=1, help="vllm/openai: requests in flight at once."),
    device: str = typer.Option(None, "--device", help="transformers: auto, cpu or cuda."),
    log_dir: Path = typer.Option(None, "--log-dir", help="vllm: where the server log goes (default: beside --out)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Backend option KEY=VALUE (repeatable), e.g. -o max_model_len=2048 -o tensor_parallel_size=2."),
) -> None:
    """Answer a multi-turn question set with a model; resumable, failures retried on the next run."""
    from harness.backends import default_backend, make_backend
    from harness.bench import load_questions, resolve_bench
    from harness.generate import GenerationSettings, count_requests, generate_answers, pending

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
    with _progress() as prog:
        task = prog.add_task(f"{kind}: starting {model_id}", total=None)
        with b:
            prog.update(task, description=f"generate ({model_id}, {qpath.parent.name})", total=count_requests(todo, settings))
            rep = generate_answers(b, questions, out, settings, on_request=lambda n: prog.advance(task, n))
    console.print(f"wrote {out}: {rep.answered} questions answered, {rep.already_done} already there, "
                  f"{rep.failed} failed; {rep.completion_tokens} tokens in {rep.wall_s:.1f}s ({rep.tokens_per_s:.0f} tok/s)")
    if rep.failed:
        raise FusevalError(f"{rep.failed} questions failed (errors in {rep.failures_path}); run the same command "
                           "again to retry them")


@app.command()
def world(
    root: Path = typer.Argument(Path("runs/world"), help="Where to build (or find) the tiny world."),
) -> None:
    """Build the embedded tiny world: a pivot and source specialists of other tokenizers and architectures."""
    from fusion.zoo import build_world

    path = build_world(root, progress=True)
    console.print(f"world: {path}")


@app.command()
def demo(
    workspace: Path = typer.Option(Path("runs"), "--workspace", help="Where the world, built models, store and "
                                                                     "reports go."),
    backend: str = typer.Option(None, "--backend", help="vllm or transformers (default: transformers on a machine "
                                                        "without a GPU, vllm where one is present)."),
    seeds: int = typer.Option(2, "--seeds", min=1, help="Training seeds of the fusion (the report shows their spread)."),
) -> None:
    """The whole job on the embedded tiny world: fuse, merge, serve, answer, judge, compare, report."""
    from harness.demo import run_demo

    if backend is None:
        import torch

        from harness.backends import vllm_available

        backend = "vllm" if torch.cuda.is_available() and vllm_available() else "transformers"
    run_demo(workspace, console, backend=backend, seeds=seeds)


def error(message: str) -> None:
    """One line on stderr: `error: MESSAGE`, the label in red where the terminal shows colour."""
    console.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def exit_on_sigterm() -> None:
    """Turn SIGTERM (CI timeouts, `kill`) into SystemExit, so `with` blocks stop the servers we started."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    # Transparent huge pages for torch's large CPU buffers (read when torch first allocates):
    # merges allocate tensor-sized temporaries, and 4 KiB page faults dominated those allocations.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    # Our progress is rich's; the libraries' tqdm bars (lm-eval, datasets, transformers) would interleave with it.
    # tqdm reads TQDM_* defaults when it is first imported, so this must come before any library import.
    os.environ.setdefault("TQDM_DISABLE", "1")
    exit_on_sigterm()
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except (FusevalError, OSError) as e:  # ours, or the system's (a full disk, a permission): what, and where
        if _state["debug"]:
            raise
        message = str(e)
        if isinstance(e, OSError):
            message = f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e)
        error(message)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and the like (typer >= 0.20 ships its own copy of click)
        import click

        clicks = tuple({click.exceptions, sys.modules.get("typer._click.exceptions", click.exceptions)})
        if any(isinstance(e, m.ClickException) for m in clicks):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":  # click.Abort, wherever this typer keeps it
            sys.exit(1)
        raise


from harness import cli_eval, cli_run  # noqa: E402,F401  (register eval, scores, pairwise, import-fastchat, export,

#                                                   run, report, gate, history)

if __name__ == "__main__":  # `python -m harness.cli`: run the imported module, where cli_eval registered its commands
    from harness.cli import main as _main

    _main()
