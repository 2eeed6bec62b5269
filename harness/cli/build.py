"""`fuseval merge`, `fuseval fuse`: build checkpoints from recipes."""

from __future__ import annotations

from pathlib import Path

import typer

from fusion.common.errors import FusevalError
from harness.cli.app import app
from harness.cli.options import parse_size
from harness.ui import console, progress


@app.command()
def merge(
    config: Path = typer.Argument(..., help="Merge recipe (mergekit-style YAML)."),
    out_dir: Path = typer.Argument(..., help="Directory to write the merged model into (created atomically)."),
    dtype: str = typer.Option(None, "--dtype", help="Written dtype (float32, float16, bfloat16); overrides out_dtype."),
    shard_size: str = typer.Option("5GB", "--shard-size", help="Maximum size of one output shard, e.g. 5GB, 500MB."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow loading .bin (pickle) checkpoints: they can "
                                                                    "run code."),
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
    with progress() as prog:
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
    """FuseChat: fuse each source into the pivot (stage 1), merge the targets (stage 2), train the control
    (stage1: joint fuses every source at once into one target, FuseLLM's way, with no stage 2)."""
    from fusion.pipeline import load_fuse_config, run_fuse

    cfg = load_fuse_config(config)
    report = run_fuse(cfg, out_dir, progress=True)
    for name, st in report["stage1"].items():
        picks = ", ".join(f"{d}: {dict(c)}" for d, c in st["picked"].items())
        taught = ", ".join(f"{d} {v:.0%}" for d, v in st["teacher_token_share"].items())
        by = "the sources" if cfg.stage1 == "joint" else name
        console.print(f"stage 1 {name}: transferred {st['transferred_share']:.0%} of response tokens; picked {picks}; "
                      f"tokens taught by {by}: {taught}")
    written = sorted(p.name for p in Path(out_dir).iterdir() if not p.name.startswith("."))
    console.print(f"wrote {out_dir}: " + ", ".join(written))
