"""Shared utilities at the bottom of every layer: errors, atomic files, failpoints, YAML configs, content keys.

Nothing here imports anything else of fuseval, so fusion/, reports/ and harness/ all build on it.
"""

from fusion.common.errors import FusevalError
from fusion.common.hashing import derived_seed, digest

__all__ = ["FusevalError", "derived_seed", "digest"]
