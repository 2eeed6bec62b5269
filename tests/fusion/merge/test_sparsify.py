import numpy as np
import pytest
import torch

from fusion.merge import sparsify
from tests.fusion.merge import npref


@pytest.mark.parametrize("n, k", [(10, 3), (3_000_000, 1), (3_000_000, 1_500_000), (3_000_000, 2_999_999),
                                  (2_500_000, 12_345)])
def test_kth_largest_is_exact(n, k):
    g = torch.Generator().manual_seed(n + k)
    values = torch.randn(n, generator=g).abs().numpy()
    expected = np.sort(values)[::-1][k - 1]
    assert sparsify.kth_largest(values, k) == expected


def test_kth_largest_with_heavy_ties_and_skew():
    # 40% exact zeros, a cluster of repeated values and a long tail: the bracket must still be exact
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2_000_000, generator=g).abs() ** 4
    v[torch.rand(v.shape, generator=g) < 0.4] = 0.0
    v[:300_000] = 0.125
    v = v.numpy()
    for k in (1, 500_000, 1_100_000, 1_200_000, 1_999_999):
        assert sparsify.kth_largest(v, k) == np.sort(v)[::-1][k - 1], k


def test_top_k_mask_exact_count_and_ties_in_index_order():
    m = np.array([1.0, 3.0, 2.0, 2.0, 2.0, 0.5], dtype=np.float32)
    assert sparsify.top_k_mask(m, 3).tolist() == [False, True, True, True, False, False]
    big = np.abs(np.random.default_rng(1).normal(size=3_000_000)).astype(np.float32)
    big[::7] = 0.5  # many ties exactly at a likely threshold region
    mask = sparsify.top_k_mask(big, 1_000_000)
    assert int(mask.sum()) == 1_000_000
    np.testing.assert_array_equal(mask, npref.top_k_mask(big, 1_000_000))


def test_keep_only_cpu_and_generic_paths_agree():
    keep = np.array([True, False, True, False])
    for t in (torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.bfloat16)):
        assert sparsify.keep_only(t, keep).float().tolist() == [1.0, 0.0, 3.0, 0.0]


@pytest.mark.parametrize("n", [10_001, 10_000, 3_999])
def test_random_drop_in_chunks_draws_what_one_call_draws(monkeypatch, n):
    # The fused path draws DRAW_CHUNK entries at a time; the kept entries and their values must be
    # those of one mask drawn for the whole tensor (bernoulli_mask, the reference path).
    g = torch.Generator().manual_seed(n)
    delta = torch.randn(n, generator=g)
    monkeypatch.setattr(sparsify, "DRAW_CHUNK", 1_000)
    got = sparsify.random_drop(delta.clone(), 0.3, np.random.default_rng(7), "density")
    keep = sparsify.bernoulli_mask(np.random.default_rng(7), n, 0.3)
    want = torch.where(torch.from_numpy(keep), delta / 0.3, delta * 0)
    assert torch.equal(got, want) and 0.25 < keep.mean() < 0.35
