"""`fuseval import-fastchat`, `fuseval export`: the store to and from FastChat's files and Parquet."""

from __future__ import annotations

from pathlib import Path

import typer

from fusion.common.errors import FusevalError
from harness.cli.app import app
from harness.cli.options import STORE_HELP
from harness.ui import console


@app.command("import-fastchat")
def import_fastchat_(
    path: Path = typer.Argument(..., help="FastChat's llm_judge data directory, one bench of it, or a FastChat "
                                          "checkout."),
    store_path: Path = typer.Option(Path("runs/fuseval.db"), "--store", help=STORE_HELP),
) -> None:
    """Load FastChat questions, model answers and judgments into the store (importing twice adds nothing)."""
    from harness.formats.exchange import import_fastchat
    from harness.formats.fastchat import load_fastchat_dir
    from harness.store import Store, exclusive

    data = load_fastchat_dir(path)  # every file read and checked before the store is created or touched
    with exclusive(store_path, "import-fastchat"), Store(store_path) as store:
        rep = import_fastchat(store, data)
    console.print(f"imported {', '.join(rep.benches)} into {store_path}: {rep.questions} questions, {rep.models} "
                  f"models, {rep.answers} new answers, {rep.judgments} new judgments ({rep.missing} missing grades)"
                  + (f", {rep.skipped} judgments skipped (their answers are not in the data)" if rep.skipped else ""))


@app.command()
def export(
    out: Path = typer.Argument(..., help="Directory to write into."),
    format: str = typer.Option("fastchat", "--format", help="fastchat (question.jsonl, model_answer/, model_judgment/) "
                                                            "or parquet (one file per table)."),
    bench: str = typer.Option(None, "--bench", help="fastchat: the bench to export (default: every bench)."),
    store_path: Path = typer.Option(Path("runs/fuseval.db"), "--store", help="The run store (SQLite) to read."),
) -> None:
    """Export the store: FastChat llm_judge files, or Parquet tables for pandas."""
    from harness.formats.exchange import export_fastchat
    from harness.store import Store

    if not store_path.exists():
        raise FusevalError(f"{store_path}: no such store")
    with Store(store_path) as store:
        if format == "parquet":
            written = store.to_parquet(out)
        elif format == "fastchat":
            benches = [bench] if bench else [r[0] for r in store.db.execute(
                "SELECT DISTINCT bench FROM bench_questions ORDER BY bench")]
            written = [p for b in benches for p in export_fastchat(store, out, b)]
        else:
            raise FusevalError(f"--format {format!r}: choose fastchat or parquet")
    console.print(f"wrote {len(written)} files under {out}")
