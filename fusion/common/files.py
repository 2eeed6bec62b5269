"""Atomic file and directory writes: a crash never leaves something that looks complete."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fusion.common import faults
from fusion.common.errors import FusevalError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write `payload` to `path` via a temporary file in the same directory and an atomic rename.

    A failed write (a full disk, an I/O error) leaves the previous file at `path` as it was and is a
    one-line error naming the file; a kill leaves at most a hidden `.NAME.*.tmp` beside it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise FusevalError(f"{path}: cannot write: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            faults.point("files.write")
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise FusevalError(f"{path}: cannot write: {e.strerror}") from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` for text (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(target: Path) -> None:
    """Remove `.NAME.partial-PID-*` directories left by killed writers (their PID is gone)."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:partial|old)-(\d+)-")
    for sibling in target.parent.iterdir():
        m = pattern.match(sibling.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary directory next to `target`; rename it into place on success.

    On any exception the temporary directory is removed. A kill -9 leaves only a hidden
    `.NAME.partial-PID-*` directory, never a directory at `target` that looks complete; the next
    write to the same target removes such leftovers once their process is gone.
    """
    target = Path(target)
    if target.exists() and not force:
        raise FusevalError(f"{target}: output directory exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        # Replace: move the old one aside first so there is never a moment without a complete copy.
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
        os.replace(target, trash / "old")
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)
