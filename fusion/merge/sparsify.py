"""Sparsification of task vectors (deltas): magnitude top-k, random drop (DARE), outliers, rank sampling.

All functions take one delta tensor and return a tensor of the same shape. Selecting the top k
magnitudes uses a linear-time selection (numpy's introselect) instead of a full sort: mergekit
argsorts every delta, which dominates its TIES time on large models.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Rescale = Literal["density", "l1", "none"]


def _top_k_mask(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly the k largest entries (ties broken by lower flat index)."""
    n = magnitude.numel()
    if k >= n:
        return torch.ones_like(magnitude, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(magnitude, dtype=torch.bool)
    a = magnitude.detach().reshape(-1).to(torch.float32).cpu().numpy()
    thr = np.partition(a, n - k)[n - k]  # the k-th largest value
    mask = a > thr
    short = k - int(mask.sum())
    if short > 0:  # entries equal to the threshold fill the rest, in index order
        eq = np.flatnonzero(a == thr)[:short]
        mask[eq] = True
    return torch.from_numpy(mask).reshape(magnitude.shape).to(magnitude.device)


def magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top `density` fraction of entries by |delta| (TIES); k = max(1, int(density * numel))."""
    if density >= 1.0:
        return delta
    if density <= 0.0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    return delta * _top_k_mask(delta.abs(), max(1, int(density * delta.numel())))


def rescale(kept: torch.Tensor, original: torch.Tensor, keep_prob: float | torch.Tensor, how: Rescale) -> torch.Tensor:
    """Rescale the kept entries: by 1/p (DARE paper), by the L1-norm ratio (mergekit 0.1.5), or not."""
    if how == "density":
        return kept / keep_prob
    if how == "l1":
        before = float(original.abs().sum())
        after = float(kept.abs().sum())
        # mergekit skips the rescale when either norm is below 1e-7.
        return kept * (before / after) if before >= 1e-7 and after >= 1e-7 else kept
    return kept


def random_drop(delta: torch.Tensor, density: float, rng: torch.Generator, how: Rescale) -> torch.Tensor:
    """DARE: drop each entry with probability 1 - density, then rescale the kept ones."""
    if density >= 1.0:
        return delta
    if density <= 0.0:
        return torch.zeros_like(delta)
    keep = torch.rand(delta.shape, generator=rng, device=rng.device) < density
    return rescale(delta * keep.to(delta.device), delta, density, how)


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
    mag = delta.abs()
    window = _top_k_mask(mag, n - n_bot) & ~_top_k_mask(mag, n - n_bot - target)
    return delta * window


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


def rank_sampling(delta: torch.Tensor, density: float, epsilon: float, rng: torch.Generator, how: Rescale) -> torch.Tensor:
    """DELLA's MagPrune: sample keeps with rank-dependent probabilities, rescale kept entries by 1/p."""
    if density >= 1.0:
        return delta
    probs = rank_sampling_probs(delta, density, epsilon)
    keep = torch.rand(delta.shape, generator=rng, device=rng.device).to(delta.device) < probs
    kept = delta * keep
    if how == "density":
        return torch.where(keep, kept / probs.clamp_min(1e-12), kept)
    return rescale(kept, delta, density, how)
