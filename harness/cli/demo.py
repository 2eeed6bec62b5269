"""`fuseval world`, `fuseval demo`: the embedded tiny world, and the whole job on it."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli.app import app
from harness.ui import console


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
    seeds: int = typer.Option(2, "--seeds", min=1,
                              help="Training seeds of the fusion (the report shows their spread)."),
) -> None:
    """The whole job on the embedded tiny world: fuse, merge, serve, answer, judge, compare, report."""
    from harness.run.demo import run_demo

    if backend is None:
        import torch

        from harness.backends import vllm_available

        backend = "vllm" if torch.cuda.is_available() and vllm_available() else "transformers"
    run_demo(workspace, console, backend=backend, seeds=seeds)
