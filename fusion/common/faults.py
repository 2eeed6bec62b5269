"""Failpoints for the fault suite (`tests/faults/`): make a process fail at a named point, as a crash would.

    FUSEVAL_FAULTS="merge.tensor@7:kill" fuseval merge recipe.yml out/       # SIGKILL at the 7th tensor
    FUSEVAL_FAULTS="files.write@2:enospc" fuseval report latest              # the 2nd atomic write: disk full

Each entry `name@N:action` fires the N-th time this process passes `point(name)`; entries are separated
by commas. Actions: `kill` (SIGKILL to this process: no cleanup runs, as with the OOM killer or a
power cut), `enospc` and `eio` (raise the OSError a full or failing disk raises). With the variable
unset, the normal case, `point` costs one dictionary lookup. `FUSEVAL_FAULTS_TRACE=FILE` appends the
name of every point passed to FILE, so a test knows how many passes a clean run makes.

The points: `files.write` (every atomic file write, after the bytes are written and before the
rename), `store.commit` (every store transaction, before its COMMIT), `merge.tensor` (after each
tensor of a merge is written), `train.step` (after each optimizer step of fusion training),
`teachers.shard` (after each shard of teacher distributions is recorded).
"""

from __future__ import annotations

import errno
import os
import signal

from fusion.common.errors import FusevalError

ENV = "FUSEVAL_FAULTS"
TRACE_ENV = "FUSEVAL_FAULTS_TRACE"  # a file: each point passed appends its name (to size N)
ACTIONS = ("kill", "enospc", "eio")


def _parse(text: str) -> dict[str, tuple[int, str]]:
    plan: dict[str, tuple[int, str]] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        try:
            where, action = entry.rsplit(":", 1)
            name, n = where.split("@")
            count = int(n)
        except ValueError:
            raise FusevalError(f"{ENV}: {entry!r}: expected name@N:action") from None
        if action not in ACTIONS or count < 1:
            raise FusevalError(f"{ENV}: {entry!r}: N must be >= 1 and the action one of {', '.join(ACTIONS)}")
        plan[name] = (count, action)
    return plan


_plan: dict[str, tuple[int, str]] | None = None  # read from the environment at the first point passed
_trace: str | None = None
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Pass the failpoint `name`: fail here if FUSEVAL_FAULTS says so for this pass."""
    global _plan, _trace
    if _plan is None:
        _plan, _trace = _parse(os.environ.get(ENV, "")), os.environ.get(TRACE_ENV)
    if _trace:
        with open(_trace, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    if name not in _plan:
        return
    _seen[name] = _seen.get(name, 0) + 1
    count, action = _plan[name]
    if _seen[name] != count:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    code = errno.ENOSPC if action == "enospc" else errno.EIO
    raise OSError(code, os.strerror(code))
