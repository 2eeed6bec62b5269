"""Where a run came from: the git commit and the versions of what computes its numbers.

    store.start_run(...)   # records git_sha() and environment() in the run's row
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path


def git_sha() -> str | None:
    """The commit fuseval runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """What ran this: versions of python and the libraries that change numbers."""
    env: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("torch", "transformers", "vllm", "numpy"):
        m = sys.modules.get(mod)
        if m is not None:
            env[mod] = getattr(m, "__version__", None)
    return env
