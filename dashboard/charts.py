"""Altair chart builders for the dashboard pages (DataFrames in, charts out; no data access)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

MAX_POINTS = 20_000  # altair embeds the data in the page: keep the payload small
# Series labels carry the probe setting where a run has several ("vit_b · lr=0.08, preset=paper"):
# a legend below the chart, one label a line, wide enough to tell the settings apart.
_LEGEND = alt.Legend(orient="bottom", direction="vertical", labelLimit=420)


def _thin(df: pd.DataFrame) -> pd.DataFrame:
    return df.sample(MAX_POINTS, random_state=0) if len(df) > MAX_POINTS else df


def histogram(
    df: pd.DataFrame, column: str, *, by: str = "model", bins: int | None = None, title: str = ""
) -> alt.Chart:
    """Overlaid histograms of `column`, one colour per value of `by` (bins: about 2·√n, 10 to 40)."""
    data = _thin(df[[column, by]].dropna())
    bins = bins or int(np.clip(2 * np.sqrt(len(data)), 10, 40))
    return (
        alt.Chart(data, title=title or column)
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(
            x=alt.X(f"{column}:Q", bin=alt.Bin(maxbins=bins), title=column),
            y=alt.Y("count():Q", stack=None, title="pairs"),
            color=alt.Color(f"{by}:N", legend=_LEGEND),
            tooltip=[f"{by}:N", "count():Q"],
        )
    )


def ecdf_frame(df: pd.DataFrame, column: str, *, by: str = "model") -> pd.DataFrame:
    """Empirical CDF of `column` per group: columns `by`, `column`, `fraction`."""
    parts = []
    for key, group in df[[column, by]].dropna().groupby(by, sort=True):
        values = np.sort(group[column].to_numpy(dtype=float))
        if len(values) > 2000:  # a quantile grid draws the same curve with far fewer points
            values = np.quantile(values, np.linspace(0, 1, 2000))
        fraction = np.linspace(1 / len(values), 1.0, len(values))
        parts.append(pd.DataFrame({by: key, column: values, "fraction": fraction}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[by, column, "fraction"])


def ecdf(df: pd.DataFrame, column: str, *, by: str = "model", title: str = "") -> alt.Chart:
    """Empirical CDF of `column`, one line per value of `by`."""
    data = ecdf_frame(df, column, by=by)
    return (
        alt.Chart(data, title=title or f"ECDF of {column}")
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X(f"{column}:Q", title=column),
            y=alt.Y("fraction:Q", title="fraction of pairs", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(f"{by}:N", legend=_LEGEND),
            tooltip=[f"{by}:N", f"{column}:Q", "fraction:Q"],
        )
    )


def displacement_vs_eps(df: pd.DataFrame, norm: str) -> alt.Chart:
    """Median `disp_over_pair` against ε for one norm, adversarial (solid) vs random (dashed).

    Expects long-format rows: series (model and setting label), norm, eps, kind
    ("adversarial" | "random"), value.
    """
    data = df[df["norm"] == norm]
    return (
        alt.Chart(data, title=f"{norm}: displacement / pair distance vs ε (median over pairs)")
        .mark_line(point=True)
        .encode(
            x=alt.X("eps:Q", title=f"ε ({norm}, pixels in [0, 1])"),
            y=alt.Y("value:Q", title="disp_over_pair"),
            color=alt.Color("series:N", legend=_LEGEND),
            strokeDash=alt.StrokeDash("kind:N", title="perturbation", sort=["adversarial", "random"]),
            tooltip=["series:N", "kind:N", alt.Tooltip("eps:Q", format=".4g"), alt.Tooltip("value:Q", format=".4g")],
        )
    )


def lipschitz_by_family(df: pd.DataFrame, value: str = "l_jvp") -> alt.Chart:
    """Box plots of a Lipschitz estimate per direction family, log y axis, one colour per series
    (model and setting label, column `series`)."""
    data = _thin(df[["series", "family", value]].dropna())
    data = data[data[value] > 0]  # a log axis cannot show 0
    return (
        alt.Chart(data, title=f"Local Lipschitz estimates ({value}) by direction family")
        .mark_boxplot(extent="min-max")
        .encode(
            x=alt.X("family:N", title="direction family", sort=["top", "match", "random", "null"]),
            xOffset=alt.XOffset("series:N"),
            y=alt.Y(f"{value}:Q", title=f"{value} (log scale)", scale=alt.Scale(type="log")),
            color=alt.Color("series:N", legend=_LEGEND),
        )
    )


def loss_trajectory(losses: list[float], log_every: int | None) -> pd.DataFrame:
    """The loss trajectory as a (step, loss) frame for st.line_chart."""
    stride = int(log_every) if log_every else 1
    return pd.DataFrame({"step": np.arange(len(losses)) * stride, "loss": np.asarray(losses, dtype=float)}).set_index(
        "step"
    )
