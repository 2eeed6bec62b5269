"""Elementwise merges on the CPU: tensors cut into tasks, merged by parallel lanes into the staging ring.

    lanes = MergeLanes(merger, writer, reader_pool, lanes_pool, n_lanes)
    lanes.merge_tensor(p, maps, views)   # reserve, merge and commit p's tasks, in file order
    lanes.hand_off(0)                    # wait for every task and commit it

The main thread cuts a tensor into tasks of TASK_NUMEL elements and reserves each task's room in
the writer's staging ring (in file order); `n_lanes` merge lanes, threads whose torch operations
run on one core each (fusion.threads), merge tasks straight from the page cache into that room,
and the main thread commits finished tasks in order, so the writer sends them to disk without
copying them. A method is elementwise (`MergeMethod.elementwise`) when merging blocks gives the
whole tensor's result bit for bit.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack

import torch

from fusion.io import Reservation, ShardedWriter
from fusion.merge.merger import TensorMerger, all_finite
from fusion.merge.plan import TensorPlan

# Elementwise methods stream a tensor in tasks of TASK_NUMEL elements, each merged by one merge
# lane in blocks of BLOCK_NUMEL (4 MiB in float32: the method's passes over a block stay in the
# CPU's last-level cache); TASKS_AHEAD tasks per lane are queued, so no lane waits for the main
# thread. Measured on the 1B benchmark set (2 cores): 2^19..2^20-element blocks in 2^21..2^22
# tasks were best and about equal; 2^17-element blocks were ~50% slower (per-block overhead).
BLOCK_NUMEL = 1 << 20
TASK_NUMEL = 1 << 22
TASKS_AHEAD = 2


def staging_bytes(n_lanes: int, out_itemsize: int) -> int:
    """The most bytes reserved and not yet committed: the tasks merging, and the one being reserved."""
    return (TASKS_AHEAD * n_lanes + 1) * TASK_NUMEL * out_itemsize


class MergeLanes:
    """Merges elementwise tensors task by task in a pool of lanes, committing the tasks in file order."""

    def __init__(self, merger: TensorMerger, writer: ShardedWriter, reader: ThreadPoolExecutor,
                 pool: ThreadPoolExecutor, n_lanes: int):
        self.merger, self.writer, self.reader, self.pool, self.n_lanes = merger, writer, reader, pool, n_lanes
        self.queue: deque[tuple[Reservation, Future, ExitStack | None]] = deque()  # tasks merging, in file order
        self.local = threading.local()  # each lane's block buffers, one per input, in the compute dtype

    def merge_tensor(self, p: TensorPlan, maps: ExitStack, views: list[torch.Tensor]) -> None:
        """Queue the tasks of tensor `p` from its mapped inputs (`views`, closed with `maps` when read)."""
        flat = [v.reshape(-1) for v in views]
        n, at = flat[0].numel(), 0
        while True:  # an empty tensor is one empty task
            r = self.writer.reserve(p.name, at, min(TASK_NUMEL, n - at))
            k = r.out.numel()
            fut = self.pool.submit(self._merge_task, p, [v[at:at + k] for v in flat], r.out)
            at += k
            self.queue.append((r, fut, maps if at >= n else None))
            self.hand_off(TASKS_AHEAD * self.n_lanes)
            if at >= n:
                break

    def hand_off(self, keep: int) -> None:
        """Commit finished tasks, oldest first, until `keep` are left merging."""
        while len(self.queue) > keep:
            r, fut, maps = self.queue.popleft()
            fut.result()
            if maps is not None:  # the tensor's last task: its inputs are read; unmapping takes a while
                self.reader.submit(maps.close)
            self.writer.commit(r)

    def _merge_task(self, p: TensorPlan, parts: list[torch.Tensor], out: torch.Tensor) -> None:
        # Runs in a merge lane: merges the task's inputs (`parts`, views of the mapped files) into
        # `out` (room the writer reserved, in the written dtype), BLOCK_NUMEL elements at a time:
        # each block is read into the lane's buffers, merged there and narrowed into `out`.
        # Elementwise arithmetic carries a NaN or Inf of any input into the output, and narrowing
        # keeps them: one look at `out` covers inputs, result and range; only then are the blocks
        # looked at again, to name the input or the cause.
        if not hasattr(self.local, "inputs"):
            plan = self.merger.plan
            self.local.inputs = [torch.empty(BLOCK_NUMEL, dtype=plan.compute) for _ in plan.sources]
        for at in range(0, out.numel(), BLOCK_NUMEL):
            out[at:at + BLOCK_NUMEL].copy_(self._merged_block(p, [v[at:at + BLOCK_NUMEL] for v in parts]))
        if not all_finite(out):
            for at in range(0, out.numel(), BLOCK_NUMEL):
                block = [v[at:at + BLOCK_NUMEL] for v in parts]
                if not all_finite(self._merged_block(p, block)):
                    self.merger.not_finite(p, block)
            raise self.merger.overflow(p)

    def _merged_block(self, p: TensorPlan, parts: list[torch.Tensor]) -> torch.Tensor:
        loaded = [buf[:v.numel()].copy_(v) for buf, v in zip(self.local.inputs, parts)]
        base = self.merger.plan.base
        return self.merger.merged(p, loaded[0] if base else None, loaded[1:] if base else loaded, check=False)
