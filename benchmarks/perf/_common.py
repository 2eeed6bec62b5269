"""Helpers shared by the benchmarks in benchmarks/perf: measured subprocesses, file reads, tables, results.

Not a benchmark itself (run_all.py skips files starting with an underscore). Linux only: peak
memory comes from wait4's rusage and /proc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = HERE / ".cache"  # git-ignored: model sets, the mergekit venv, outputs, results
CHUNK = 64 * 2**20  # 64 MiB reads: large enough that syscall overhead is negligible


@dataclass
class Measured:
    """One finished subprocess: wall time and peak memory."""

    rc: int
    seconds: float
    peak_rss_mb: float  # ru_maxrss from wait4 in a small launcher: the kernel's exact high-water mark
    peak_anon_mb: float  # sampled every 50 ms from /proc: private memory only (mapped file pages excluded)
    hwm_sampled_mb: float  # VmHWM sampled every 50 ms: a cross-check of peak_rss_mb (misses only the last 50 ms)
    log: Path

    def tail(self, n: int = 15) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


# Why a launcher: Linux keeps a process's ru_maxrss across exec, and a forked (or vforked, as
# posix_spawn does) child starts from its parent's memory, so wait4 on a child of this benchmark
# would report at least the benchmark's own RSS (measured: a 3 GB parent made `true` read 3 GB).
# This tiny Python process forks the tool instead; what it inherits is ~5 MB.
_LAUNCHER = """
import os, sys, time
log, cmd = sys.argv[1], sys.argv[2:]
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(fd, 1); os.dup2(fd, 2)
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
print(pid, flush=True)
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss, flush=True)
"""


def _proc_status_kb(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in keys:
                    found[key] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return found


def run_measured(cmd: list[str], log: Path, env: dict | None = None) -> Measured:
    """Run `cmd` (stdout and stderr to `log`), returning its wall time and peak memory.

    ru_maxrss of the reaped tool is its peak resident set as the kernel tracked it (on Linux it
    also covers descendants the tool waited for), so no sampling can miss a spike. RssAnon and
    VmHWM are sampled alongside: private memory vs. memory-mapped files, and a cross-check.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    launcher = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(log), *cmd],
                                stdout=subprocess.PIPE, text=True, env=env)
    pid = int(launcher.stdout.readline())
    peaks = {"RssAnon": 0, "VmHWM": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for key, kb in _proc_status_kb(pid, tuple(peaks)).items():
                peaks[key] = max(peaks[key], kb)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc, seconds, maxrss_kb = launcher.stdout.readline().split()
    done.set()
    sampler.join()
    launcher.wait()
    return Measured(int(rc), float(seconds), int(maxrss_kb) / 1024, peaks["RssAnon"] / 1024,
                    peaks["VmHWM"] / 1024, log)


def read_files(paths: list[Path]) -> tuple[int, float]:
    """Read every byte of `paths` in 64 MiB chunks; return (bytes, seconds)."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    start = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
    return total, time.perf_counter() - start


def write_bytes(path: Path, nbytes: int) -> float:
    """Seconds to write `nbytes` to a new file in 64 MiB chunks (not synced, as a merge's shards)."""
    buf = bytes(CHUNK)
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for off in range(0, nbytes, CHUNK):
            f.write(buf[:min(CHUNK, nbytes - off)])
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def write_bytes_direct(path: Path, nbytes: int) -> float | None:
    """Seconds to write `nbytes` to a new file with O_DIRECT in 8 MiB chunks, as `fuseval merge`
    writes its shards by default; None where the OS or file system refuses direct I/O."""
    import mmap

    if not hasattr(os, "O_DIRECT"):
        return None
    chunk = 8 << 20
    buf = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT needs
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT)
    except OSError:
        return None
    start = time.perf_counter()
    try:
        for off in range(0, nbytes, chunk):
            os.pwrite(fd, memoryview(buf)[:chunk], off)  # rounded up to whole chunks: O_DIRECT wants aligned sizes
    except OSError:
        return None
    finally:
        os.close(fd)
        path.unlink()
    return time.perf_counter() - start


def evict_files(paths: list[Path]) -> None:
    """Ask the kernel to drop these files' clean pages from the page cache (no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def best_of(fn, repeats: int) -> tuple[float, object]:
    """The fastest of `repeats` calls of fn (seconds) and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """Print a plain fixed-width table (numbers right-aligned)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if _is_number(c) else c.ljust(w) for c, w in zip(row, widths)).rstrip()

    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(fmt(r))


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("x"))
        return True
    except ValueError:
        return False


def results_path(name: str) -> Path:
    """Where benchmark `name` writes its JSON summary (read by run_all.py)."""
    return CACHE / f"{name}_results.json"


def target(metric: str, value: float | None, goal: str, ok: bool | None) -> dict:
    """One target check for the summary: ok is None when it could not be evaluated."""
    return {"metric": metric, "value": value, "target": goal, "ok": ok}


def write_results(name: str, targets: list[dict], **details: object) -> Path:
    """Write a benchmark's summary: {"benchmark", "targets": [{metric, value, target, ok}], ...details}."""
    path = results_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"benchmark": name, "targets": targets, **details}, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path
