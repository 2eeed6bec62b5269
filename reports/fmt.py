"""Numbers as report text: two decimals, the true minus sign, '+' on signed differences.

    fmt_number(-0.054)                           # '−0.05'
    fmt_estimate((0.42, -0.05, 0.90), signed=True)  # '+0.42 (95% interval −0.05 to +0.90)'

`reports` imports neither `harness` nor `fusion` (DESIGN.md section 1), so the report keeps these few
helpers itself; they word numbers exactly as `harness.analysis.wording` does (DESIGN.md section 3.5).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

MINUS = "\u2212"  # '−', as in DESIGN.md's "+0.42 (95% interval −0.05 to +0.90)"


def _finite(x: object) -> bool:
    try:
        return x is not None and math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def fmt_number(x: float | None, digits: int = 2, signed: bool = False) -> str:
    """A number with `digits` decimals, U+2212 for negatives, '+' for positives when signed; 'n/a' if not finite."""
    if not _finite(x):
        return "n/a"
    x = float(x)  # type: ignore[arg-type]
    text = f"{abs(x):.{digits}f}"
    if float(text) == 0:
        return text  # "−0.00" would claim a direction the rounding hides
    return (MINUS if x < 0 else "+" if signed else "") + text


def fmt_level(level: float) -> str:
    """0.95 -> '95%', 0.975 -> '97.5%'."""
    return f"{round(100 * level, 6):g}%"


def fmt_interval(low: float, high: float, digits: int = 2, signed: bool = False) -> str:
    """'6.80 to 7.41' (the interval alone, for a table whose header names the level); 'n/a' without one."""
    if not (_finite(low) and _finite(high)):
        return "n/a"
    return f"{fmt_number(low, digits, signed)} to {fmt_number(high, digits, signed)}"


def fmt_estimate(mean: float, low: float, high: float, level: float = 0.95, digits: int = 2,
                 signed: bool = False) -> str:
    """'7.12 (95% interval 6.80 to 7.41)'; signed for differences."""
    return f"{fmt_number(mean, digits, signed)} ({fmt_level(level)} interval {fmt_interval(low, high, digits, signed)})"


def fmt_count(x: object) -> str:
    """An integer count, or 'n/a' when it is missing."""
    return str(int(float(x))) if _finite(x) else "n/a"  # type: ignore[arg-type]


def fmt_time(epoch: object) -> str:
    """Epoch seconds -> '2024-05-01 12:00 UTC'; other values as given, '' when missing."""
    if not _finite(epoch):
        return "" if epoch is None else str(epoch)
    when = datetime.fromtimestamp(float(epoch), tz=UTC)  # type: ignore[arg-type]
    return when.strftime("%Y-%m-%d %H:%M UTC")
