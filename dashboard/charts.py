"""Altair chart builders for the dashboard pages (DataFrames in, charts out; no data access).

The frames are already aggregated (bins, quantiles, box-plot summaries computed in DuckDB by
dashboard/data.py): a chart embeds only the points it draws, whatever the size of the run."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

# Series labels carry the probe setting where a run has several ("vit_b · lr=0.08, preset=paper"):
# a legend below the chart, one label a line, wide enough to tell the settings apart.
_LEGEND = alt.Legend(orient="bottom", direction="vertical", labelLimit=420)


def histogram(bins: pd.DataFrame, metric: str, *, by: str = "series", title: str = "") -> alt.Chart:
    """Overlaid histograms from pre-computed bins (columns `by`, metric, bin_start, bin_end,
    count; dashboard.data.match_histograms), one colour per value of `by`."""
    data = bins.loc[bins["metric"] == metric, [by, "bin_start", "bin_end", "count"]]
    return (
        alt.Chart(data, title=title or metric)
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(
            x=alt.X("bin_start:Q", title=metric, bin="binned"),
            x2="bin_end:Q",
            y=alt.Y("count:Q", stack=None, title="pairs"),
            color=alt.Color(f"{by}:N", legend=_LEGEND),
            tooltip=[f"{by}:N", alt.Tooltip("bin_start:Q", format=".4g"),
                     alt.Tooltip("bin_end:Q", format=".4g"), "count:Q"],
        )
    )


def ecdf(points: pd.DataFrame, metric: str, *, by: str = "series", title: str = "") -> alt.Chart:
    """Empirical CDF from pre-computed quantiles (columns `by`, metric, value, fraction;
    dashboard.data.match_ecdf), one line per value of `by`."""
    data = points.loc[points["metric"] == metric, [by, "value", "fraction"]]
    return (
        alt.Chart(data, title=title or f"ECDF of {metric}")
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("value:Q", title=metric),
            y=alt.Y("fraction:Q", title="fraction of pairs", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(f"{by}:N", legend=_LEGEND),
            tooltip=[f"{by}:N", alt.Tooltip("value:Q", format=".4g"), "fraction:Q"],
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


def lipschitz_by_family(boxes: pd.DataFrame, value: str = "l_jvp") -> alt.Chart:
    """Box plots of a Lipschitz estimate per direction family from pre-computed summaries
    (columns series, family, min, q1, median, q3, max; dashboard.data.lipschitz_boxes): whiskers
    from min to max, a box from q1 to q3, a tick at the median; log y axis, one colour per series."""
    order = ["top", "match", "grad", "random", "null", "off_top"]
    base = alt.Chart(boxes, title=f"Local Lipschitz estimates ({value}) by direction family").encode(
        x=alt.X("family:N", title="direction family", sort=order),
        xOffset=alt.XOffset("series:N"),
        color=alt.Color("series:N", legend=_LEGEND),
        tooltip=["series:N", "family:N", "n:Q", alt.Tooltip("min:Q", format=".4g"),
                 alt.Tooltip("q1:Q", format=".4g"), alt.Tooltip("median:Q", format=".4g"),
                 alt.Tooltip("q3:Q", format=".4g"), alt.Tooltip("max:Q", format=".4g")],
    )
    y = alt.Y("min:Q", title=f"{value} (log scale)", scale=alt.Scale(type="log"))
    whiskers = base.mark_rule().encode(y=y, y2="max:Q")
    box = base.mark_bar(size=12).encode(y=alt.Y("q1:Q", scale=alt.Scale(type="log")), y2="q3:Q")
    median = base.mark_tick(color="black", size=12).encode(y=alt.Y("median:Q", scale=alt.Scale(type="log")))
    return alt.layer(whiskers, box, median)


def loss_trajectory(losses: list[float], log_every: int | None) -> pd.DataFrame:
    """The loss trajectory as a (step, loss) frame for st.line_chart."""
    stride = int(log_every) if log_every else 1
    return pd.DataFrame({"step": np.arange(len(losses)) * stride, "loss": np.asarray(losses, dtype=float)}).set_index(
        "step"
    )
