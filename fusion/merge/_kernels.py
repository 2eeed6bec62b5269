"""Fused CPU kernels for the hot loops of the merge methods (numba), one pass over memory each.

The torch formulation of TIES' consensus needs about twenty passes over tensor-sized arrays
(sign election, agreement, sums, divisor); on a memory-bound 2-core machine the passes, not the
arithmetic, are the cost. Each kernel here reads every input once and writes the output once,
with the same floating-point operations in the same order as the torch code it replaces.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def ties_consensus(base, deltas, weights, normalize, min_clamp, add_base):  # pragma: no cover - compiled
    """deltas[0] = s · Σ_i relu(w_i δ_i s) / divisor with s = sign(Σ_i w_i δ_i), and with add_base
    also base += that merged delta (a caller that scales it by λ ≠ 1 adds base itself).

    divisor = Σ of the weights of agreeing models (normalize) with min_clamp > 0 as its floor, or
    a zero divisor replaced by 1 when min_clamp <= 0; without normalize the divisor is 1.
    """
    n = base.shape[0]
    m = len(deltas)
    one = weights[0] * 0 + 1  # 1 in the arrays' dtype: a float literal would promote float32 math to float64
    zero = one - one
    for i in numba.prange(n):
        mixed = deltas[0][i] * weights[0]
        for k in range(1, m):
            mixed = mixed + deltas[k][i] * weights[k]
        s = np.copysign(one, mixed)
        num = zero
        div = zero
        for k in range(m):
            a = deltas[k][i] * weights[k] * s
            if a > 0:
                num = num + a
                div = div + weights[k]
        num = num * s
        if normalize:
            if min_clamp > 0:
                div = max(div, min_clamp)
            elif div == 0:
                div = one
            num = num / div
        # No multiply-add here: LLVM may contract a*b + c into one fma, which rounds differently
        # from torch's separate mul_ and add_. So λ is applied by the caller when it is not 1.
        deltas[0][i] = num
        if add_base:
            base[i] = num + base[i]


@numba.njit(parallel=True, cache=True)
def drop_divide(flat, raw, threshold, divisor):  # pragma: no cover - compiled
    """DARE's drop in one pass: flat[i] / divisor where raw[i] < threshold, else flat[i] · 0
    (a signed zero, as the masked multiply gives). divisor 1 leaves kept entries unchanged."""
    for i in numba.prange(flat.shape[0]):
        if raw[i] < threshold:
            flat[i] = flat[i] / divisor
        else:
            flat[i] = flat[i] * 0
