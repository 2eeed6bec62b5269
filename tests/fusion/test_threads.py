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
