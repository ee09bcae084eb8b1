"""Small text formatters for numbers shown on the pages."""

from __future__ import annotations

import math
from typing import Any


def duration(seconds: float | None) -> str:
    """120.0 -> '2 min 0 s'; None or NaN -> '—'."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60} min"


def number(value: Any, digits: int = 4) -> str:
    """A metric value as short text (None/NaN -> '—')."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.{digits}g}"
    return str(value)
