"""`fuseval world`, `fuseval demo`: the embedded tiny world, and the whole job on it."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli.app import app
from harness.ui import console


@app.command()
def world(
    root: Path = typer.Argument(Path("runs/world"), help="Where to build (or find) the tiny world."),
    kind: str = typer.Option("default", "--world", help="default; known-effect: the positive control, where the "
                                                        "fusion data's labels cannot teach the sources' skills but "
                                                        "the sources can; real-teacher: SmolLM2 (registry assets) "
                                                        "as the source of a pivot with Llama-2's vocabulary."),
) -> None:
    """Build the embedded tiny world: a pivot and source specialists of other tokenizers and architectures."""
    from fusion.common.errors import FusevalError
    from fusion.zoo import WORLDS, build_world

    if kind not in WORLDS:
        raise FusevalError(f"--world {kind!r}: choose one of {', '.join(WORLDS)}")
    from harness.formats.zoo import write_world_bench

    path = build_world(root, WORLDS[kind](), progress=True)
    console.print(f"world: {path}")
    console.print(f"its test set as a bench (questions: $FUSEVAL_WORLD/bench in a suite): {write_world_bench(path)}")


@app.command()
def demo(
    workspace: Path = typer.Option(Path("runs"), "--workspace", help="Where the world, built models, store and "
                                                                     "reports go."),
    backend: str = typer.Option(None, "--backend", help="vllm or transformers (default: transformers on a machine "
                                                        "without a GPU, vllm where one is present)."),
    seeds: int = typer.Option(2, "--seeds", min=1,
                              help="Training seeds of the demo world's fusion (the report shows their spread); "
                                   "the known-effect world runs its suite's one seed."),
    world: str = typer.Option("both", "--world", help="both (the positive control, then the demo's world), "
                                                      "default or known-effect."),
    aa_pairs: int = typer.Option(20, "--aa-pairs", min=0, help="Pairs of the A/A check on the demo world's pivot "
                                                               "(0: skip it)."),
) -> None:
    """The whole job on the embedded tiny world: fuse, merge, serve, answer, judge, compare, report."""
    from harness.run.demo import run_demo

    if backend is None:
        import torch

        from harness.backends import vllm_available

        backend = "vllm" if torch.cuda.is_available() and vllm_available() else "transformers"
    from fusion.common.errors import FusevalError
    from harness.run.demo import SUITES

    if world != "both" and world not in SUITES:
        raise FusevalError(f"--world {world!r}: choose both, {' or '.join(SUITES)}")
    run_demo(workspace, console, backend=backend, seeds=seeds, aa_pairs=aa_pairs,
             worlds=tuple(SUITES) if world == "both" else (world,))
