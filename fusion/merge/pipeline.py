"""Execute a merge plan: read ahead, merge, write behind, tensor by tensor into the planned shards.

    written = execute(plan, tmp_dir, shard_bytes=5 * 10**9, device=torch.device("cpu"))

A pipeline: one thread reads (maps, or converts and checks) tensor i+1 and one writes tensor
i-1 while tensor i is merged, so reading, computing and writing overlap instead of adding up.
torch, the mmap'd reads and file writes release the GIL. Whole tensors are written in plan
order by the one writer thread, each after the one before (memory grows by one tensor's
inputs and one output).
Elementwise methods on the CPU go further (`fusion.merge.streaming`). The reader thread only maps
a tensor's inputs, and merge lanes merge it in tasks straight into the writer's staging ring. One
torch thread team spanning the cores (every operation split, then a barrier) was ~30% slower
than the lanes: the reader and writer threads kept taking a member's core.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from fusion.io import ShardedWriter
from fusion.merge.merger import TensorMerger, all_finite, check_finite
from fusion.merge.plan import MergeInput, MergePlan, TensorPlan
from fusion.merge.streaming import MergeLanes, staging_bytes
from fusion.threads import lanes, one_core


@dataclass
class Written:
    """What `execute` wrote: the shard files, their tensor bytes, and the methods' notes per tensor."""

    files: list[Path]
    total_bytes: int
    diagnostics: dict[str, dict]


def execute(plan: MergePlan, out_dir: Path, *, shard_bytes: int, device: torch.device = torch.device("cpu"),
            direct_writes: bool = True, progress: Callable[[str, int, int], None] | None = None) -> Written:
    """Merge every planned tensor into shards in `out_dir`; `progress(name, done, total)` per tensor."""
    blockwise = plan.method.elementwise and device.type == "cpu"
    n_lanes = lanes() if blockwise else 1
    merger = TensorMerger(plan)
    out_itemsize = max((p.out_dtype.itemsize for p in plan.tensors), default=4)
    open_bytes = staging_bytes(n_lanes, out_itemsize) if blockwise else 0
    with (ThreadPoolExecutor(1, "fuseval-read") as reader,
          ShardedWriter(out_dir, [(p.name, p.shape, p.out_dtype) for p in plan.tensors], shard_bytes,
                        metadata={"fuseval_method": plan.method.name}, direct=direct_writes,
                        open_bytes=open_bytes) as writer,
          ThreadPoolExecutor(1, "fuseval-write") as write_pool,
          ThreadPoolExecutor(n_lanes, "fuseval-merge", initializer=one_core) as lanes_pool):
        streamed = MergeLanes(merger, writer, reader, lanes_pool, n_lanes)
        _Pipeline(plan, merger, streamed, reader, write_pool, writer, blockwise, device).run(progress)
        files = writer.finish()
    return Written(files, writer.total_bytes, merger.diagnostics)


@dataclass
class _Pipeline:
    """The threads of one merge and what they work on (see the module docstring)."""

    plan: MergePlan
    merger: TensorMerger
    lanes: MergeLanes  # merges elementwise tensors when `blockwise`
    reader: ThreadPoolExecutor  # reads the next tensor's inputs (and unmaps finished ones)
    write_pool: ThreadPoolExecutor  # writes whole tensors, one at a time
    writer: ShardedWriter
    blockwise: bool  # merged tensors go through the merge lanes
    device: torch.device

    def run(self, progress: Callable[[str, int, int], None] | None) -> None:
        """Merge and write every planned tensor, in plan order."""
        plan = self.plan.tensors
        written: Future | None = None  # the last whole-tensor write
        ahead = self.reader.submit(self.load_inputs, plan[0]) if plan else None
        for i, p in enumerate(plan):
            loaded = ahead.result()
            ahead = self.reader.submit(self.load_inputs, plan[i + 1]) if i + 1 < len(plan) else None
            if self.blockwise and p.merge:
                if written is not None:
                    written.result()  # the writer thread is done with the writer
                self.lanes.merge_tensor(p, *loaded)
            else:  # the whole tensor; its inputs are dropped before waiting for the previous write
                self.lanes.hand_off(0)
                out = self.merger.merged(p, *loaded) if p.merge else self.plan.ref.reader.get(p.name)
                del loaded
                if written is not None:
                    written.result()
                written = self.write_pool.submit(self.write, p, out)
                del out
            loaded = None
            if progress:
                progress(p.name, i + 1, len(plan))
        self.lanes.hand_off(0)
        if written is not None:
            written.result()

    def load_inputs(self, p: TensorPlan) -> tuple:
        """Runs in the reader thread: (maps, views) of the inputs when blockwise, else (base, models)
        in the compute dtype and checked; (None, None) for a tensor that is not merged."""
        if not p.merge:
            return None, None
        if self.blockwise:  # map the inputs (MAP_POPULATE takes a while); the merge lanes read them
            maps = ExitStack()
            try:
                return maps, [maps.enter_context(inp.reader.mapped(p.name)) for inp in self.plan.sources]
            except BaseException:
                maps.close()
                raise
        base = self.plan.base
        return (self._load(base, p.name) if base else None), [self._load(inp, p.name) for inp in self.plan.inputs]

    def _load(self, inp: MergeInput, name: str) -> torch.Tensor:
        t = inp.reader.get(name, dtype=self.plan.compute)
        check_finite(t, f"{inp.reader.path}: tensor {name!r}")
        return t.to(self.device)

    def write(self, p: TensorPlan, out: torch.Tensor) -> None:
        """Runs in the writer thread: a whole tensor, narrowed to its written dtype here."""
        t = out.to(p.out_dtype)
        if t.dtype != out.dtype and not all_finite(t):
            raise self.merger.overflow(p)
        self.writer.write(p.name, t)
