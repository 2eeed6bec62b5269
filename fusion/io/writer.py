"""Planned safetensors shards, written as tensors come, with an index json for more than one shard.

    with atomic_output_dir("out") as tmp:
        w = ShardedWriter(tmp, [(name, shape, dtype), ...], max_shard_bytes=5 * 10**9)
        w.write(name, tensor) ...; w.finish()      # or piece by piece: w.write_block(name, block, start)
        r = w.reserve(name, start, n); r.out.copy_(x); w.commit(r)   # or computed straight into its room

The writer knows every output tensor's name, shape and dtype before the first byte (plan first,
execute second), so it lays out each shard's safetensors header up front and writes each tensor's
bytes at its offset when it is produced: peak memory is one tensor, not one shard or one model.

Bytes that come in file order are staged in a ring of chunks written in the background, with
O_DIRECT (past the page cache) where the OS and file system allow it: see `fusion.io.stream.Stream`
for why, and `ShardedWriter` for the fallbacks.
"""

from __future__ import annotations

import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fusion.common import faults
from fusion.common.errors import FusevalError
from fusion.common.files import atomic_write_text
from fusion.io.dtypes import DTYPE_CODES, element_count
from fusion.io.model_dir import DEFAULT_SHARD_BYTES, INDEX_NAME, SINGLE_NAME
from fusion.io.stream import Stream, pwrite_all

Entry = tuple[str, tuple[int, ...], torch.dtype]  # a planned tensor: name, shape, written dtype


def plan_shards(entries: list[Entry], max_shard_bytes: int) -> list[list[Entry]]:
    """Group tensors, in order, into shards of at most `max_shard_bytes` (a bigger tensor gets its own)."""
    shards: list[list] = [[]]
    used = 0
    for name, shape, dtype in entries:
        nbytes = element_count(shape) * dtype.itemsize
        if shards[-1] and used + nbytes > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append((name, shape, dtype))
        used += nbytes
    return shards


@dataclass
class Reservation:
    """Room for elements [start, start + len(out)) of a planned tensor: fill `out`, then commit."""

    name: str
    start: int
    out: torch.Tensor  # 1-D, in the tensor's written dtype
    _ring: list[np.ndarray] | None = None  # the staged bytes reserved; None: `out` is written plainly at commit
    _copy: bool = False  # `out` is a buffer of its own (the ring is misaligned for it): copy at commit


class ShardedWriter:
    """Writes a planned set of tensors into safetensors shards, each tensor as soon as it is ready.

    Tensors (or blocks of them) may come in any order. Bytes that come in file order, as a merge
    writes them, go through a `Stream`: staged in a ring and written chunk by chunk in the
    background, with O_DIRECT when `direct` is on and the file system takes it (one that refuses
    it, at open or at the first write, gets plain writes). The first write out of order ends a
    file's stream and the rest of that file is written with plain writes.
    A producer that computes in file order can also `reserve` room in the ring, fill it (from
    any thread) and `commit` it, so its results are never copied on the way to the disk.
    Use as a context manager (or call `close`) so an aborted write closes its files.
    """

    def __init__(self, out_dir: Path, entries: list[Entry],
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES, metadata: dict[str, str] | None = None,
                 direct: bool = True, open_bytes: int = 0):
        if max_shard_bytes <= 0:
            raise FusevalError(f"shard size must be positive, got {max_shard_bytes}")
        self.out_dir = Path(out_dir)
        shards = plan_shards(entries, max_shard_bytes)
        n = len(shards)
        self.files = [self.out_dir / (SINGLE_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors")
                      for i in range(n)]
        self._where: dict[str, tuple[Path, int, tuple[int, ...], torch.dtype]] = {}
        self._heads: dict[Path, bytes] = {}  # each file's header bytes
        self._sizes: dict[Path, int] = {}
        self.total_bytes = 0
        for path, shard in zip(self.files, shards):
            self._lay_out(path, shard, metadata or {})
        self._pending = set(self._where)
        self._written: dict[str, int] = {}  # elements written per tensor
        self._direct = direct and hasattr(os, "O_DIRECT")
        self._open_bytes = open_bytes  # the most bytes ever reserved and not yet committed
        self._plain: set[Path] = set()  # files (partly) written with plain writes: no stream for them
        self._streams: dict[Path, Stream] = {}  # one per file being streamed (two where a file ends)
        self._pool: ThreadPoolExecutor | None = None

    def _lay_out(self, path: Path, shard: list, metadata: dict[str, str]) -> None:
        header: dict[str, object] = {"__metadata__": {"format": "pt", **metadata}}
        offset = 0
        for name, shape, dtype in shard:
            nbytes = element_count(shape) * dtype.itemsize
            header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
        start = 8 + len(raw)
        head = struct.pack("<Q", len(raw)) + raw
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(start + offset)
            if offset:
                try:  # reserve the blocks now: a full disk fails here, before any tensor is computed
                    os.posix_fallocate(f.fileno(), 0, start + offset)
                except OSError as e:
                    if e.errno == 28:  # ENOSPC
                        raise FusevalError(f"{path}: not enough disk space for "
                                           f"{(start + offset) / 1e9:.2f} GB") from None
        for name, shape, dtype in shard:
            self._where[name] = (path, start + header[name]["data_offsets"][0], shape, dtype)
        self._heads[path], self._sizes[path] = head, start + offset
        self.total_bytes += offset

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write one planned tensor's bytes into its place."""
        shape = self._where[name][2]
        if tuple(tensor.shape) != shape:
            raise FusevalError(f"{name}: produced shape {tuple(tensor.shape)} but planned {shape}")
        self._put(name, tensor, 0)

    def write_block(self, name: str, block: torch.Tensor, start: int) -> None:
        """Write a block of a planned tensor: the 1-D `block` holds its flattened elements from `start` on."""
        self._check_fits(name, start, block.numel(), block.dim())
        self._put(name, block, start)

    def _check_fits(self, name: str, start: int, numel: int, dim: int = 1) -> None:
        shape = self._where[name][2]
        if dim != 1 or start < 0 or start + numel > element_count(shape):
            raise FusevalError(f"{name}: a block of {numel} elements at element {start} does not fit "
                               f"the planned shape {shape}")

    def reserve(self, name: str, start: int, numel: int) -> Reservation:
        """Room for up to `numel` elements of tensor `name` from `start` on (fewer where the ring
        wraps: `len(r.out)` says). Fill `r.out` (any thread may), then `commit(r)`. Make and commit
        reservations in file order to stream them; any other order still works, through a buffer
        of its own and plain writes."""
        self._check_fits(name, start, numel)
        path, pos, _, dtype = self._where[name]
        offset = pos + start * dtype.itemsize
        try:
            s = self._open_stream(path, offset) if numel else None
        except OSError as e:
            raise FusevalError(f"{path}: cannot open for writing: {e.strerror}") from None
        if s is None:
            if numel:
                self._plain.add(path)
            return Reservation(name, start, torch.empty(numel, dtype=dtype))
        count = max(1, s.contiguous(numel * dtype.itemsize) // dtype.itemsize)
        ring = s.reserve(count * dtype.itemsize)
        if offset % dtype.itemsize:  # misaligned for this dtype in the ring: fill a buffer, copy at commit
            return Reservation(name, start, torch.empty(count, dtype=dtype), ring, _copy=True)
        return Reservation(name, start, torch.from_numpy(ring[0]).view(dtype), ring)

    def commit(self, r: Reservation) -> None:
        """Hand over a filled reservation: the oldest one not yet committed."""
        if r._ring is None:
            self._put(r.name, r.out, r.start)
            return
        path = self._where[r.name][0]
        s = self._streams[path]
        try:
            if r._copy:
                src = r.out.view(torch.uint8).numpy()
                for piece in r._ring:
                    piece[:], src = src[:len(piece)], src[len(piece):]
            s.commit(sum(len(piece) for piece in r._ring))
            self._count(r.name, r.out.numel())
            self._end_if_complete(path)
        except OSError as e:
            raise FusevalError(f"{path}: cannot write tensor {r.name!r}: {e.strerror}") from None

    def _count(self, name: str, numel: int) -> None:
        written = self._written.get(name, 0) + numel
        self._written[name] = written
        if written >= element_count(self._where[name][2]):
            faults.point("merge.tensor")
            self._pending.discard(name)

    def _put(self, name: str, tensor: torch.Tensor, start: int) -> None:
        path, pos, shape, dtype = self._where[name]
        t = tensor.detach().to(device="cpu", dtype=dtype).contiguous().reshape(-1)
        data = memoryview(t.view(torch.uint8).numpy()) if t.numel() else memoryview(b"")
        try:
            self._bytes_at(path, pos + start * dtype.itemsize, data)
            self._count(name, t.numel())
        except OSError as e:
            raise FusevalError(f"{path}: cannot write tensor {name!r}: {e.strerror}") from None

    def _open_stream(self, path: Path, offset: int) -> Stream | None:
        """The stream that takes the bytes at `offset` of `path` next (opened if need be), or None."""
        if path in self._plain:
            return None
        s = self._streams.get(path)
        if s is not None and s.reserved == offset:
            return s
        if s is not None:  # out of file order
            if s.reserved != s.committed:
                raise RuntimeError(f"{path}: a write out of file order while reservations are open")
            self._end_stream(path)  # plain writes for the rest of the file
            return None
        if offset != len(self._heads[path]):
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(2, "fuseval-write-io")
        try:
            s = Stream(path, self._heads[path], self._sizes[path], self._pool, self._direct, self._open_bytes)
        except OSError:
            if not self._direct:
                raise
            self._direct = False  # EINVAL: this file system does not take O_DIRECT; stream through the page cache
            s = Stream(path, self._heads[path], self._sizes[path], self._pool, False, self._open_bytes)
        self._streams[path] = s
        return s

    def _bytes_at(self, path: Path, offset: int, data: memoryview) -> None:
        if not data:
            return
        s = self._open_stream(path, offset)
        if s is not None and s.reserved != s.committed:
            raise RuntimeError(f"{path}: a write while reservations are open")
        if s is None:
            self._plain.add(path)
            fd = os.open(path, os.O_WRONLY)
            try:
                pwrite_all(fd, data, offset)
            finally:
                os.close(fd)
            return
        s.put(data)
        self._end_if_complete(path)

    def _end_if_complete(self, path: Path) -> None:
        if self._streams[path].committed == self._sizes[path]:
            self._end_stream(path)

    def _end_stream(self, path: Path) -> None:
        self._plain.add(path)
        s = self._streams.pop(path, None)
        if s is not None:
            s.end()

    def finish(self) -> list[Path]:
        """Check every planned tensor was written and write the index (for more than one shard)."""
        if self._pending:
            raise FusevalError(f"{self.out_dir}: {len(self._pending)} planned tensors were never written, "
                               f"e.g. {sorted(self._pending)[0]!r}")
        for path in list(self._streams):
            if self._streams[path].reserved != self._streams[path].committed:
                raise FusevalError(f"{path}: reserved room was never committed")
            try:
                self._end_stream(path)
            except OSError as e:
                raise FusevalError(f"{path}: cannot write: {e.strerror}") from None
        self.close()
        if len(self.files) > 1:
            index = {"metadata": {"total_size": self.total_bytes},
                     "weight_map": {name: w[0].name for name, w in self._where.items()}}
            atomic_write_text(self.out_dir / INDEX_NAME, json.dumps(index, indent=2) + "\n")
        return list(self.files)

    def close(self) -> None:
        """Close what is open (an unfinished stream is dropped: call after an error, or after `finish`)."""
        streams, self._streams = list(self._streams.values()), {}
        for s in streams:
            s.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
