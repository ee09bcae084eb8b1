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


VERDICT_SCALE = alt.Scale(domain=["supported", "not_supported", "inconclusive"],
                          range=["#2ca02c", "#d62728", "#7f7f7f"])
FOREST_WIDTH = 640  # px for the panels of one claim, beside the row labels


def forest(points: pd.DataFrame, claim: str) -> alt.HConcatChart | None:
    """The forest plot of one claim from analysis.report.glance.forest_points (as a frame): a
    panel per check, a line per model and setting (`row`), the estimate as a dot coloured by the
    check's verdict, its interval as a bar, the threshold as a dashed rule, the negative
    control's value as a black cross where the rows carry one; ratio statistics (`log`) on a
    log axis. Drawn as SVG: each dot's `description` (its aria-label) states the claims row it
    comes from (config_hash, statistic, estimate, interval, threshold)."""
    data = points[points["claim"] == claim].copy()
    if data.empty:
        return None
    for col in ("estimate", "ci_low", "ci_high", "control", "threshold"):
        data[col] = pd.to_numeric(data[col], errors="coerce").astype(float)
    rows = list(dict.fromkeys(data["row"]))
    panels = list(dict.fromkeys(data["panel"]))
    width = max(150, FOREST_WIDTH // len(panels) - 12)
    data["desc"] = [
        f"claim={r.claim}; config_hash={r.config_hash}; statistic={r.statistic}; "
        f"estimate={r.estimate!r}; ci_low={r.ci_low!r}; ci_high={r.ci_high!r}; threshold={r.threshold!r}"
        for r in data.itertuples()]
    data["interval"] = [f"{lo:.4g} – {hi:.4g}" if pd.notna(lo) and pd.notna(hi) else "n/a"
                        for lo, hi in zip(data["ci_low"], data["ci_high"])]
    charts = []
    for i, panel in enumerate(panels):
        part = data[data["panel"] == panel].copy()
        log = bool(part["log"].any())
        if log:  # a log axis cannot show zero or less
            for col in ("estimate", "ci_low", "ci_high", "control", "threshold"):
                part[col] = part[col].where(part[col] > 0)
        scale = alt.Scale(type="log" if log else "linear", zero=False, nice=False)
        y = alt.Y("row:N", sort=rows, title=None,
                  axis=alt.Axis(labelLimit=300) if i == 0 else None,
                  scale=alt.Scale(domain=rows))
        colour = alt.Color("verdict:N", scale=VERDICT_SCALE, legend=None)  # the caption says it
        tooltip = ["row:N", "setting:N", "statistic:N", "n:Q", "estimate_text:N", "interval:N",
                   alt.Tooltip("threshold:Q", format=".4g"), alt.Tooltip("control:Q", format=".4g"),
                   "verdict:N"]
        base = alt.Chart(part)
        bars = base.transform_filter("isValid(datum.ci_low) && isValid(datum.ci_high)").mark_rule(
            strokeWidth=3).encode(x=alt.X("ci_low:Q", scale=scale, title=panel), x2="ci_high:Q",
                                  y=y, color=colour, tooltip=tooltip)
        dots = base.transform_filter("isValid(datum.estimate)").mark_circle(size=70, opacity=1).encode(
            x=alt.X("estimate:Q", scale=scale), y=y, color=colour, tooltip=tooltip,
            description="desc:N")
        limit = alt.Chart(part.drop_duplicates("threshold")).transform_filter(
            "isValid(datum.threshold)").mark_rule(color="black", strokeDash=[5, 3]).encode(
            x=alt.X("threshold:Q", scale=scale))
        layers = [bars, dots, limit]
        if part["control"].notna().any():
            layers.append(base.transform_filter("isValid(datum.control)").mark_point(
                shape="cross", color="black", size=80, filled=True).encode(
                x=alt.X("control:Q", scale=scale), y=y, tooltip=tooltip))
        charts.append(alt.layer(*layers).properties(width=width, height=24 * len(rows)))
    return alt.hconcat(*charts, spacing=8).resolve_scale(x="independent").properties(
        title=f"{claim.replace('_', ' ')}: estimate, 95% interval, threshold (dashed)",
        usermeta={"embedOptions": {"renderer": "svg"}})
