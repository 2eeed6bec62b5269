"""Independent numpy statements of what the code computes, for tests to compare against (float64)."""

from __future__ import annotations

import numpy as np


def log_softmax64(x: np.ndarray) -> np.ndarray:
    """log softmax over the last axis in float64, shifted by the max for stability."""
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
