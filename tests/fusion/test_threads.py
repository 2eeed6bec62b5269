import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from fusion import threads


def _in_new_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


@pytest.mark.skipif(threads._openmp() is None, reason="no OpenMP runtime loaded (not Linux, or torch without it)")
def test_one_core_sets_only_the_calling_threads_team():
    before = torch.get_num_threads()
    with ThreadPoolExecutor(2, initializer=threads.one_core) as pool:
        inside = list(pool.map(lambda _: torch.get_num_threads(), range(4)))
        x = torch.arange(1 << 20, dtype=torch.float32)
        assert pool.submit(lambda: float(x.sum())).result() == float(x.double().sum())  # ops still work
    assert inside == [1] * 4
    # The main thread and threads started later keep torch's own count.
    assert torch.get_num_threads() == before and _in_new_thread(torch.get_num_threads) == before
    assert threads.lanes() == max(1, before)


def test_without_openmp_there_is_one_lane(monkeypatch):
    monkeypatch.setattr(threads, "_openmp", lambda: None)
    threads._one_core_works.cache_clear()
    try:
        assert threads.lanes() == 1
        threads.one_core()  # a no-op, not an error
    finally:
        threads._one_core_works.cache_clear()


def test_torchs_openmp_is_chosen_after_numba_loads_its_own():
    # numba's OpenMP threading layer (the TIES and DARE kernels) loads the system's libgomp next to
    # torch's own: setting the team size in the wrong one would leave the lanes' torch ops parallel.
    from pathlib import Path

    import numba
    import numpy as np

    @numba.njit(parallel=True)
    def total(x):
        s = 0.0
        for i in numba.prange(x.size):
            s += x[i]
        return s

    assert total(np.ones(1000)) == 1000.0
    threads._openmp.cache_clear()
    threads._one_core_works.cache_clear()
    try:
        omp = threads._openmp()
        torch_dir = Path(torch.__file__).resolve().parent
        if omp is None or not list(torch_dir.rglob("libgomp*")):
            pytest.skip("torch brings no OpenMP runtime of its own here")
        assert Path(omp._name).resolve().is_relative_to(torch_dir)
        assert _in_new_thread(lambda: (threads.one_core(), torch.get_num_threads())[1]) == 1
    finally:
        threads._openmp.cache_clear()
        threads._one_core_works.cache_clear()
