"""Sparsification of task vectors (deltas): magnitude top-k, random drop (DARE), outliers, rank sampling.

All functions take one delta tensor and return a tensor of the same shape; they may reuse the
delta's memory (masking in place), as merge methods own their inputs. Selecting the top k
magnitudes uses a sampled bracket plus a linear-time selection instead of a full sort: mergekit
argsorts every delta, which dominates its TIES time on large models. The counting and masking
passes run in numpy, whose boolean reductions are several times faster than torch's on CPU.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Rescale = Literal["density", "l1", "none"]


# Below this size a plain partition is cheapest; above it, a sample narrows the search first.
_SAMPLED_SELECT_MIN = 1 << 20
_SAMPLE_SIZE = 1 << 16


def kth_largest(values: np.ndarray, k: int) -> float:
    """The k-th largest entry of a flat float tensor (1 <= k <= numel), exactly.

    For large tensors, a strided sample brackets the answer between two bounds with a wide
    safety margin; counting entries above the upper bound and selecting within the bracket (a
    tiny fraction of the tensor) replaces a partition of the whole tensor. If the bracket misses,
    fall back to the full partition, so the result is always exact.
    """
    n = values.size
    if n >= _SAMPLED_SELECT_MIN:
        sample = np.sort(values[:: n // _SAMPLE_SIZE])
        s = sample.size
        pos = (1 - k / n) * (s - 1)  # where the answer sits in the sorted sample
        margin = 6 * (s * (k / n) * (1 - k / n)) ** 0.5 + 8  # many binomial standard deviations
        lo = sample[max(0, int(pos - margin))]
        hi = sample[min(s - 1, int(pos + margin) + 1)]
        need = k - np.count_nonzero(values > hi)  # rank of the answer among entries within [lo, hi]
        if need >= 1:
            band = values[(values >= lo) & (values <= hi)]
            if need <= band.size:
                return float(np.partition(band, band.size - need)[band.size - need])
    return float(np.partition(values, n - k)[n - k])


def _flat_numpy(t: torch.Tensor) -> np.ndarray:
    """A flat float32 numpy array of `t`: a view when `t` is a contiguous CPU float32 tensor."""
    return t.detach().reshape(-1).to(device="cpu", dtype=torch.float32).numpy()


def top_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    """Flat boolean mask of exactly the k largest entries (ties broken by lower flat index)."""
    n = values.size
    if k >= n:
        return np.ones(n, dtype=bool)
    if k <= 0:
        return np.zeros(n, dtype=bool)
    thr = kth_largest(values, k)
    mask = values > thr
    short = k - np.count_nonzero(mask)
    if short > 0:  # entries equal to the threshold fill the rest, in index order
        mask[np.flatnonzero(values == thr)[:short]] = True
    return mask


def keep_only(delta: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
    """Zero `delta` (in place) wherever the flat mask `keep` is False."""
    if delta.device.type == "cpu" and delta.dtype in (torch.float32, torch.float64) and delta.is_contiguous():
        view = delta.numpy().reshape(-1)
        np.multiply(view, keep, out=view)  # numpy's masked multiply is ~7x torch's on CPU
        return delta
    return delta.mul_(torch.from_numpy(keep).reshape(delta.shape).to(delta.device))


def magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top `density` fraction of entries by |delta| (TIES); k = max(1, int(density * numel))."""
    if density >= 1.0:
        return delta
    if density <= 0.0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    return keep_only(delta, top_k_mask(np.abs(_flat_numpy(delta)), max(1, int(density * delta.numel()))))


def _l1_rescale(kept: torch.Tensor, before: float) -> torch.Tensor:
    """Scale kept entries so the L1 norm is what it was before dropping (mergekit 0.1.5)."""
    after = float(kept.abs().sum())
    # mergekit skips the rescale when either norm is below 1e-7.
    return kept.mul_(before / after) if before >= 1e-7 and after >= 1e-7 else kept


def _drop(delta: torch.Tensor, keep: np.ndarray, keep_prob: float | torch.Tensor, how: Rescale) -> torch.Tensor:
    """Zero the dropped entries in place, then rescale the kept ones: by 1/p (the DARE and DELLA
    papers), by the L1-norm ratio (mergekit 0.1.5), or not at all."""
    before = float(delta.abs().sum()) if how == "l1" else 0.0
    kept = keep_only(delta, keep)
    if how == "density":
        return kept.div_(keep_prob)  # dropped entries stay 0
    return _l1_rescale(kept, before) if how == "l1" else kept


# Random draws made at a time by random_drop's fused path (even: see there); 16 MiB of uint32.
DRAW_CHUNK = 1 << 22


def _raw_draws(rng: np.random.Generator, n: int, p: float) -> tuple[np.ndarray, np.uint32]:
    """n raw 32-bit draws and the threshold below which a draw keeps with probability p (to 2^-32);
    ~1.5x faster than drawing floats."""
    raw = rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]
    return raw, np.uint32(min(round(p * 2**32), 2**32 - 1))


def bernoulli_mask(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """n independent keeps with probability p."""
    raw, threshold = _raw_draws(rng, n, p)
    return raw < threshold


def random_drop(delta: torch.Tensor, density: float, rng: np.random.Generator, how: Rescale) -> torch.Tensor:
    """DARE: drop each entry with probability 1 - density, then rescale the kept ones."""
    if density >= 1.0:
        return delta
    if density <= 0.0:
        return torch.zeros_like(delta)
    if how != "l1" and delta.device.type == "cpu" and delta.dtype in (torch.float32, torch.float64) \
            and delta.is_contiguous():
        # The same draws and threshold as bernoulli_mask, compared, masked and divided in one pass.
        from fusion.merge._kernels import drop_divide

        flat = delta.reshape(-1).numpy()
        divisor = flat.dtype.type(density if how == "density" else 1.0)
        # Chunks of an even size draw exactly the stream one call would (random_raw hands out 64-bit
        # words, two draws each), so the result is the same and only one chunk of draws is in memory.
        for start in range(0, flat.size, DRAW_CHUNK):
            part = flat[start:start + DRAW_CHUNK]
            drop_divide(part, *_raw_draws(rng, part.size, density), divisor)
        return delta
    return _drop(delta, bernoulli_mask(rng, delta.numel(), density), density, how)


def magnitude_outliers(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Breadcrumbs: keep `int(density·n)` entries by |delta| just below the largest `int(gamma·n)`.

    The smallest n − target − n_top are dropped (none if density + gamma ≥ 1, in which case the
    kept window starts at the smallest entry), and every entry above the window too.
    """
    if density >= 1.0:
        return delta
    n = delta.numel()
    target = int(density * n)
    n_bot = max(0, n - target - int(gamma * n))
    mag = np.abs(_flat_numpy(delta))
    return keep_only(delta, top_k_mask(mag, n - n_bot) & ~top_k_mask(mag, n - n_bot - target))


def rank_sampling_probs(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA: keep probabilities rising linearly with magnitude rank within each row, from
    density − ε (smallest) to density + ε (largest). A 1-D tensor is one row; N-D rank along dim 1."""
    mag = delta.abs().to(torch.float32)
    rows = mag.unsqueeze(0) if mag.dim() == 1 else mag
    n = rows.shape[1]
    ranks = torch.argsort(torch.argsort(rows, dim=1, stable=True), dim=1).to(torch.float32)
    frac = ranks / (n - 1) if n > 1 else torch.zeros_like(ranks)  # 0 smallest .. 1 largest
    probs = (density - epsilon) + 2 * epsilon * frac
    return probs.clamp(0.0, 1.0).reshape(delta.shape)


def rank_sampling(delta: torch.Tensor, density: float, epsilon: float, rng: np.random.Generator,
                  how: Rescale) -> torch.Tensor:
    """DELLA's MagPrune: sample keeps with rank-dependent probabilities, rescale kept entries by 1/p."""
    if density >= 1.0:
        return delta
    probs = rank_sampling_probs(delta, density, epsilon)
    keep = rng.random(delta.numel(), dtype=np.float32) < _flat_numpy(probs)
    return _drop(delta, keep, probs.clamp_min(1e-12), how)
