"""Tensor dtypes by name: safetensors' dtype codes, config names ("bfloat16", "bf16"), element counts."""

from __future__ import annotations

import torch

from fusion.common.errors import FusevalError

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_CODES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
               "float64": torch.float64, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(name: str) -> torch.dtype:
    """Map a config dtype name ("bfloat16", "float32", ...) to a torch dtype."""
    try:
        return DTYPE_NAMES[str(name).lower()]
    except KeyError:
        raise FusevalError(f"unknown dtype {name!r}; choose one of float32, float16, bfloat16") from None


def dtype_name(dtype: torch.dtype) -> str:
    """The name of a torch dtype without its prefix ("bfloat16")."""
    return str(dtype).removeprefix("torch.")


def element_count(shape: tuple[int, ...]) -> int:
    """Number of elements of a tensor of `shape` (1 for a scalar)."""
    n = 1
    for d in shape:
        n *= d
    return n
