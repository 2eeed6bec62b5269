"""Independent numpy statements of the merge formulas (DESIGN.md 2.2), for checking fusion.merge."""

from __future__ import annotations

import numpy as np


def top_k_mask(a: np.ndarray, k: int) -> np.ndarray:
    """Mask of the k largest |a| entries (stable: among equals, lower index first)."""
    flat = np.abs(a).ravel()
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.shape, dtype=bool)
    mask[order[:k]] = True
    return mask.reshape(a.shape)


def linear(models, weights, normalize=True):
    out = sum(w * m for w, m in zip(weights, models))
    return out / sum(weights) if normalize else out


def task_arithmetic(base, models, weights, lam=1.0):
    return base + lam * sum(w * (m - base) for w, m in zip(weights, models))


def elect(weighted: list[np.ndarray]) -> list[np.ndarray]:
    """Agreement masks: sign(w δ) equals the sign of the sum (an exact 0 sum elects +)."""
    total = sum(weighted)
    s = np.where(total >= 0, 1.0, -1.0)
    return [np.sign(x) == s for x in weighted]


def gta(base, deltas, weights, consensus, normalize, lam=1.0):
    """Generalized task arithmetic on already-sparsified deltas."""
    weighted = [w * d for w, d in zip(weights, deltas)]
    if consensus:
        masks = elect(weighted)
        num = sum(x * m for x, m in zip(weighted, masks))
        den = sum(w * m for w, m in zip(weights, masks))
        den = np.where(den == 0, 1.0, den)
    else:
        num = sum(weighted)
        den = sum(weights) if abs(sum(weights)) >= 1e-8 else 1.0
    return base + lam * (num / den if normalize else num)


def ties(base, models, weights, densities, lam=1.0, normalize=True):
    deltas = []
    for m, d in zip(models, densities):
        delta = m - base
        if d < 1:
            delta = delta * top_k_mask(delta, max(1, int(d * delta.size)))
        deltas.append(delta)
    return gta(base, deltas, weights, consensus=True, normalize=normalize, lam=lam)


def breadcrumbs_delta(delta, density, gamma):
    n = delta.size
    target = int(density * n)
    n_bot = max(0, n - target - int(gamma * n))
    order = np.argsort(np.abs(delta).ravel(), kind="stable")  # ascending
    keep = np.zeros(n, dtype=bool)
    keep[order[n_bot:n_bot + target]] = True
    return delta * keep.reshape(delta.shape)


def della_probs(delta, density, epsilon):
    rows = np.abs(delta).reshape(1, -1) if delta.ndim == 1 else np.abs(delta)
    p = np.empty_like(rows, dtype=np.float64)
    n = rows.shape[1]
    for i, row in enumerate(rows):
        rank = np.empty(n)
        rank[np.argsort(row, kind="stable")] = np.arange(n)
        p[i] = density - epsilon + 2 * epsilon * rank / (n - 1)
    return np.clip(p, 0, 1).reshape(delta.shape)


def slerp(a, b, t):
    va, vb = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    ua = va / (np.linalg.norm(va) if np.linalg.norm(va) > 1e-8 else 1.0)
    ub = vb / (np.linalg.norm(vb) if np.linalg.norm(vb) > 1e-8 else 1.0)
    dot = float(np.clip(ua @ ub, -1, 1))
    if abs(dot) > 0.9995:
        return (1 - t) * a + t * b
    w = np.arccos(dot)
    return (np.sin((1 - t) * w) * a + np.sin(t * w) * b) / np.sin(w)


def model_stock(base, models):
    deltas = [(m - base).ravel() for m in models]
    k = len(models)
    cos = []
    for i in range(k):
        for j in range(i + 1, k):
            den = max(np.linalg.norm(deltas[i]) * np.linalg.norm(deltas[j]), 1e-6)
            cos.append(np.clip(deltas[i] @ deltas[j] / den, -1, 1))
    c = float(np.mean(cos))
    t = k * c / (1 + (k - 1) * c)
    return t * np.mean(models, axis=0) + (1 - t) * base, t


def sce(base, models, select_topk=1.0, normalize=True):
    d = np.stack([m - base for m in models])
    if select_topk < 1:
        var = d.var(axis=0)
        k = int(np.count_nonzero(var) * select_topk)
        d = d * top_k_mask(var, k)[None]
    r = (d**2).reshape(len(models), -1).mean(axis=1)
    eta = r / r.sum() if abs(r.sum()) >= 1e-6 else np.full(len(models), 1 / len(models))
    s = np.where(d.sum(axis=0) >= 0, 1.0, -1.0)
    mask = np.sign(d) == s[None]
    w = eta.reshape(-1, *[1] * base.ndim) * mask
    num = (d * w).sum(axis=0)
    if not normalize:
        return base + num, eta
    return base + num / np.maximum(w.sum(axis=0), 1e-6), eta


def varm(base, models):
    r = np.array([np.mean((m - base) ** 2) for m in models])
    w = r / r.sum() if r.sum() > 0 else np.full(len(models), 1 / len(models))
    return sum(wi * m for wi, m in zip(w, models)), w
