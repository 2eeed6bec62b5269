"""fuseval's fusion core: streaming checkpoint merges and knowledge fusion (no serving, no judging)."""

from fusion.common.errors import FusevalError

__version__ = "0.1.0"

__all__ = ["FusevalError"]
