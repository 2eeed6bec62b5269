"""Content keys and derived seeds: one way to hash things, so keys stay stable across modules."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(*parts: Any) -> str:
    """A short content key (sha256, 24 hex) of json-encodable parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def derived_seed(seed: int, name: str) -> int:
    """A 63-bit seed for one named thing (a tensor, a model), independent of the order things come in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)
