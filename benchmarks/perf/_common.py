"""Helpers shared by the benchmarks in benchmarks/perf: measured subprocesses, file reads, tables, results.

Not a benchmark itself (run_all.py skips files starting with an underscore). Linux only: peak
memory comes from wait4's rusage and /proc.
"""

from __future__ import annotations

import json
import os
import subprocess
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
    peak_rss_mb: float  # ru_maxrss from wait4: the kernel's exact high-water mark (anon + file-backed + shmem)
    peak_anon_mb: float  # sampled every 50 ms from /proc: private memory only (mapped file pages excluded)
    log: Path

    def tail(self, n: int = 15) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def _rss_anon_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def run_measured(cmd: list[str], log: Path, env: dict | None = None) -> Measured:
    """Run `cmd` (output to `log`), returning its wall time and peak memory.

    ru_maxrss of the reaped child is the peak resident set of that process as the kernel tracked
    it (on Linux it also covers descendants the child waited for), so no sampling can miss a spike.
    RssAnon is sampled alongside to tell private memory apart from memory-mapped input files.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        anon_peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                anon_peak[0] = max(anon_peak[0], _rss_anon_kb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped; keep Popen consistent
    return Measured(proc.returncode, seconds, usage.ru_maxrss / 1024, anon_peak[0] / 1024, log)


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


def evict_files(paths: list[Path]) -> None:
    """Ask the kernel to drop these files' clean pages from the page cache (no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


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
