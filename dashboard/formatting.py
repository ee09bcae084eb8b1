"""Small text formatters for numbers shown on the pages."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

SERIES_PARTS = ("model", "weights", "embed", "setting")


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


def series_labels(df: pd.DataFrame, parts: tuple[str, ...] = SERIES_PARTS) -> pd.Series:
    """One legend label per row: the model, then weights, embedding point and probe setting,
    each only where it differs between the rows (so a run with one setting reads `vit_b`, and
    one model run with two match settings reads `vit_b · lr=0.01, preset=default` and
    `vit_b · lr=0.08, preset=paper`). Empty frames give an empty Series."""
    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    present = [c for c in parts if c in df.columns]
    shown = [c for i, c in enumerate(present) if i == 0 or df[c].nunique(dropna=False) > 1]
    text = df[shown].astype(object).where(df[shown].notna(), "—").astype(str)
    return text.agg(" · ".join, axis=1)
