"""Run a merge: plan (validate everything), then stream tensor by tensor into planned shards.

    cfg = load_merge_config("merge.yml")
    result = run_merge(cfg, "out/merged", config_path="merge.yml")

Peak memory is about (number of models + 2) × the largest tensor in the compute dtype: inputs are
read one tensor at a time from memory-mapped files and each result is written at its planned
offset as soon as it exists. Elementwise methods (linear, task arithmetic) go further on the CPU:
parallel merge lanes read, merge and narrow each tensor in tasks of blocks straight into the
writer's staging ring, so their working memory is a few tasks and their passes run in cache (see
`fusion.merge.pipeline` and `fusion.merge.streaming`).

The steps, one module each: `plan` (open and check the inputs, resolve every tensor's parameters),
`pipeline` (read, merge and write the tensors), `finish` (side files, recipe); the output
directory appears, complete, only at the end (`atomic_output_dir`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fusion.common.files import atomic_output_dir
from fusion.io import DEFAULT_SHARD_BYTES
from fusion.merge.config import MergeConfig
from fusion.merge.finish import finish_output
from fusion.merge.pipeline import execute
from fusion.merge.plan import plan_merge


@dataclass(frozen=True)
class MergeOptions:
    """Run-time choices that are not part of the recipe's math."""

    out_dtype: str | None = None
    shard_bytes: int = DEFAULT_SHARD_BYTES
    allow_pickle: bool = False
    device: str = "cpu"
    force: bool = False
    direct_writes: bool = True  # O_DIRECT where the file system takes it (fusion.io.stream.Stream)


@dataclass
class MergeResult:
    """What a merge wrote."""

    out_dir: Path
    files: list[Path]
    n_tensors: int
    total_bytes: int
    seconds: float
    diagnostics: dict[str, dict] = field(default_factory=dict)


def run_merge(cfg: MergeConfig, out_dir: str | Path, *, config_path: str | Path | None = None,
              options: MergeOptions = MergeOptions(),
              progress: Callable[[str, int, int], None] | None = None) -> MergeResult:
    """Merge the models of `cfg` into `out_dir` (atomically); `progress(name, done, total)` per tensor."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    plan = plan_merge(cfg, out_dir, config_path, allow_pickle=options.allow_pickle, out_dtype=options.out_dtype)
    device = torch.device(options.device)
    with atomic_output_dir(out_dir, force=options.force) as tmp:
        written = execute(plan, tmp, shard_bytes=options.shard_bytes, device=device,
                          direct_writes=options.direct_writes, progress=progress)
        finish_output(plan, tmp, written.diagnostics, options.shard_bytes)
    return MergeResult(out_dir, [out_dir / f.name for f in written.files], len(plan.tensors), written.total_bytes,
                       time.perf_counter() - start, written.diagnostics)
