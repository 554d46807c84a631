"""How numbers read in tables, status lines and reports: one formatter per kind of value.

A base module (no fercluster imports), so the orchestration, the analysis and the CLI format the
same value the same way.
"""

from __future__ import annotations

import math
from typing import Any


def number(value: Any) -> float | None:
    """A finite float, or None for None, NaN, infinities and anything that is not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def pct(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage (0.953 -> "95.3%"); "-" when there is no finite value."""
    x = number(value)
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def acc(value: Any) -> str:
    """An accuracy fraction with three decimals (0.953 -> "0.953"); "-" when there is none."""
    x = number(value)
    return "-" if x is None else f"{x:.3f}"


def duration(seconds: Any) -> str:
    """Seconds as M:SS, or H:MM:SS from an hour on; "-" when there is no finite value."""
    x = number(seconds)
    if x is None:
        return "-"
    s = int(x)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
