"""The store's one-writer lock: one command at a time fills a store."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fusion.common.errors import FusevalError


@contextmanager
def exclusive(path: str | os.PathLike, command: str, wait: bool = False,
              on_wait: Callable[[str], None] | None = None, can_wait: bool = False) -> Iterator[None]:
    """Hold the store's writer lock (`<store>.lock`) while one command fills it; a second one refuses, or waits.

    SQLite alone keeps concurrent writers safe, but two runs on one store would generate and judge
    the same answers twice over. The lock is an flock: the kernel drops it when its process dies,
    even by kill -9, so a crashed run never blocks the next one. `can_wait`: the command has --wait
    (the refusal then says so).
    """
    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another fuseval command"
            if not wait:
                raise FusevalError(f"{path}: the store is in use by {holder}; wait for it to finish"
                                   + (" (or pass --wait to queue behind it)" if can_wait else "")) from None
            if on_wait:
                on_wait(f"waiting for {holder} to finish with {path}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`fuseval {command}` (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)
