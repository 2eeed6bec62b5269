"""Worker threads whose torch operations each run on one core, for pipelines that spread work over
threads themselves.

    n = lanes()                                   # how many such threads to run (1 if not possible)
    with ThreadPoolExecutor(n, initializer=one_core) as pool: ...

torch parallelizes each operation over an OpenMP team as wide as the machine. Several threads
doing that at once (a merge's block workers, a writer) oversubscribe the cores, and every team
waits at its barrier for a member that lost its core. `one_core` sets the team size of the calling
thread only (OpenMP keeps it per thread: `omp_set_num_threads` from a thread of our own pool), so
the rest of the process, and every later torch operation in it, keeps torch's setting. Never
`torch.set_num_threads` here: it changes the process-wide count, and after it torch and numba's
kernels (TIES, DARE) collided and later torch operations in the process ran ~100x slower.
"""

from __future__ import annotations

import ctypes
import threading
from functools import cache
from pathlib import Path

import torch

_OPENMP_LIBS = ("libgomp", "libiomp5", "libomp")  # GNU (torch's Linux wheels), Intel, LLVM


@cache
def _openmp() -> ctypes.CDLL | None:
    """torch's OpenMP runtime, already loaded into this process, or None.

    There can be two: torch's wheels bring their own libgomp, and numba's OpenMP threading layer
    (TIES, DARE) loads the system's. The one inside torch's package comes first; `lanes` checks
    that the choice works.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return None
    torch_dir = str(Path(torch.__file__).resolve().parent) + "/"
    paths = {line.split()[-1] for line in maps.splitlines() if "/" in line}
    found = [p for p in paths if any(Path(p).name.startswith(lib + ".") for lib in _OPENMP_LIBS)]
    for path in sorted(found, key=lambda p: (not p.startswith(torch_dir), p)):
        try:
            return ctypes.CDLL(path)  # already loaded: the same library, not a second copy
        except OSError:
            continue
    return None


def one_core() -> None:
    """Make torch's operations in the calling thread run on one core (a thread-pool initializer)."""
    omp = _openmp()
    if omp is None:
        return
    torch.get_num_threads()  # torch sizes a new thread's team on its first call: let that happen first
    omp.omp_set_num_threads(1)


@cache
def _one_core_works() -> bool:
    got: list[int] = []

    def probe() -> None:
        one_core()
        got.append(torch.get_num_threads())

    t = threading.Thread(target=probe, name="fuseval-probe")
    t.start()
    t.join()
    return got == [1]


def lanes() -> int:
    """How many `one_core` threads to run side by side: torch's thread count (the cores it would use,
    or what the user set), or 1 where a thread's team size cannot be set on its own."""
    return max(1, torch.get_num_threads()) if _one_core_works() else 1
