"""Per-tensor evaluation of parameter values: scalars, layer gradients and name filters (as mergekit).

A value may be
- a scalar: used for every tensor;
- a list of numbers (a gradient): linearly interpolated at t in [0, 1], t = layer / (layers - 1);
- a list of {filter: SUBSTRING, value: V} conditions: the first whose filter is a substring of the
  tensor name (or that has no filter) wins, and V is evaluated in turn.
Tensors outside the numbered layers (embeddings, final norm, lm_head) take t = 0, the gradient's
first value, as mergekit plans them; a one-layer model's layer takes t = 1.
"""

from __future__ import annotations

import math
import re
from typing import Any

from fusion.common.errors import FusevalError

LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def layer_index(tensor_name: str) -> int | None:
    """The decoder layer number in a tensor name, or None for tensors outside the layers."""
    m = LAYER_RE.search(tensor_name)
    return int(m.group(1)) if m else None


def layer_position(tensor_name: str, num_layers: int) -> float:
    """t in [0, 1] for gradient interpolation."""
    idx = layer_index(tensor_name)
    if idx is None:
        return 0.0
    return idx / (num_layers - 1) if num_layers > 1 else 1.0


def check_value(value: Any, where: str) -> None:
    """Validate the shape of a parameter value once, at config load."""
    if isinstance(value, (int, float, bool, str)) or value is None:
        return
    if isinstance(value, list) and value:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return
        if all(isinstance(v, dict) for v in value):
            for cond in value:
                extra = set(cond) - {"filter", "value"}
                if extra or "value" not in cond:
                    raise FusevalError(f"{where}: a condition needs 'value' and optionally 'filter', "
                                       f"got keys {sorted(cond)}")
                check_value(cond["value"], where)
            return
    raise FusevalError(f"{where}: expected a number, a list of numbers (layer gradient) or a list of "
                       f"{{filter, value}}, got {value!r}")


_NO_MATCH = object()


def evaluate(value: Any, tensor_name: str, t: float) -> Any:
    """The value a parameter takes for one tensor (see the module docstring)."""
    if not isinstance(value, list):
        return value
    if all(not isinstance(v, dict) for v in value):
        if len(value) == 1:
            return value[0]
        scaled = t * (len(value) - 1)
        i0 = min(int(math.floor(scaled)), len(value) - 1)
        i1 = min(i0 + 1, len(value) - 1)
        frac = scaled - i0
        return (1 - frac) * value[i0] + frac * value[i1]
    for cond in value:
        f = cond.get("filter")
        if f is None or f in tensor_name:
            return evaluate(cond["value"], tensor_name, t)
    return _NO_MATCH


def resolve(raw: dict[str, Any], tensor_name: str, t: float) -> dict[str, Any]:
    """Evaluate every parameter for one tensor, leaving out conditions that matched nothing."""
    out = {}
    for key, value in raw.items():
        v = evaluate(value, tensor_name, t)
        if v is not _NO_MATCH:
            out[key] = v
    return out
