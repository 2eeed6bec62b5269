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

from fusion.errors import FusevalError

app = typer.Typer(help="Fuse and merge chat LLMs, and measure with honest error bars whether the result got better.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)
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
                           device=device, force=force)
    with _progress() as prog:
        task = prog.add_task(f"merge ({cfg.merge_method})", total=None)

        def on_tensor(name: str, done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        result = run_merge(cfg, out_dir, config_path=config, options=options, progress=on_tensor)
    console.print(f"wrote {result.out_dir}: {result.n_tensors} tensors, {result.total_bytes / 1e6:.1f} MB in "
                  f"{len(result.files)} shard(s), {result.seconds:.1f}s")
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


@app.command()
def world(
    root: Path = typer.Argument(Path("runs/world"), help="Where to build (or find) the tiny world."),
) -> None:
    """Build the embedded tiny world: a pivot and source specialists of other tokenizers and architectures."""
    from fusion.zoo import build_world

    path = build_world(root, progress=True)
    console.print(f"world: {path}")


@app.command()
def demo(workspace: Path = typer.Option(Path("runs/demo"), "--workspace", help="Where the demo writes its models and outputs.")) -> None:
    """Run the embedded demo on tiny local models (no downloads)."""
    from harness.demo import run_demo

    run_demo(workspace, console)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    # Transparent huge pages for torch's large CPU buffers (read when torch first allocates):
    # merges allocate tensor-sized temporaries, and 4 KiB page faults dominated those allocations.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except FusevalError as e:
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
