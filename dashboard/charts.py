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
PANEL_GAP = 36  # px between a forest plot's panels (checks)


_FOREST_FIELDS = ("row", "panel", "setting", "statistic", "n", "estimate", "estimate_text", "ci_low",
                  "ci_high", "interval", "threshold", "control", "verdict", "claim", "config_hash", "desc")


def _plain(value: object) -> object:
    """A cell as JSON: NaN, inf and pandas' missing values become None."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def forest(points: pd.DataFrame, claim: str) -> dict | None:
    """The forest plot of one claim, as a Vega-Lite spec (st.vega_lite_chart), from
    analysis.glance.forest_points (as a frame): a panel per check (a facet: a claim's
    checks are all ratios or none is), a line per model and setting (`row`), the estimate as a dot
    coloured by the check's verdict, its interval as a bar, the threshold as a dashed rule and
    the negative control's value as a black cross where the rows carry one; ratio statistics
    (`log`) on a log axis. Drawn as SVG: each dot's `description` (its aria-label) states the
    claims row it comes from (claim, config_hash, statistic, estimate, interval, threshold).

    Written as the spec Altair would emit (tests/dashboard check that Altair validates it):
    building it through Altair's objects costs about 0.1 s of CPU per layer, which the Models
    page's first visit cannot afford five times over."""
    data = points[points["claim"] == claim].copy()
    if data.empty:
        return None
    numeric = ("estimate", "ci_low", "ci_high", "control", "threshold")
    for col in numeric:
        data[col] = pd.to_numeric(data[col], errors="coerce").astype(float)
    log = bool(data["log"].any())
    if log:  # a log axis cannot show zero or less
        for col in numeric:
            data[col] = data[col].where(data[col] > 0)
    rows = list(dict.fromkeys(data["row"]))
    panels = list(dict.fromkeys(data["panel"]))
    data["desc"] = [
        f"claim={r.claim}; config_hash={r.config_hash}; statistic={r.statistic}; "
        f"estimate={r.estimate!r}; ci_low={r.ci_low!r}; ci_high={r.ci_high!r}; threshold={r.threshold!r}"
        for r in data.itertuples()]
    data["interval"] = [f"{lo:.4g} – {hi:.4g}" if pd.notna(lo) and pd.notna(hi) else "n/a"
                        for lo, hi in zip(data["ci_low"], data["ci_high"])]
    values = [{k: _plain(v) for k, v in zip(_FOREST_FIELDS, rec)}
              for rec in data[list(_FOREST_FIELDS)].itertuples(index=False)]
    scale = {"type": "log" if log else "linear", "zero": False, "nice": False}
    y = {"field": "row", "type": "nominal", "sort": rows, "title": None, "axis": {"labelLimit": 300}}
    colour = {"field": "verdict", "type": "nominal", "legend": None,  # the caption says it
              "scale": {"domain": list(VERDICT_SCALE.domain), "range": list(VERDICT_SCALE.range)}}
    tooltip = [{"field": f, "type": t} for f, t in (
        ("row", "nominal"), ("setting", "nominal"), ("statistic", "nominal"), ("n", "quantitative"),
        ("estimate_text", "nominal"), ("interval", "nominal"))] + [
        {"field": "threshold", "type": "quantitative", "format": ".4g"},
        {"field": "control", "type": "quantitative", "format": ".4g"},
        {"field": "verdict", "type": "nominal"}]

    def valid(*fields: str) -> dict:
        return {"filter": " && ".join(f"isValid(datum.{f})" for f in fields)}

    def at(field: str, **more: object) -> dict:
        return {"field": field, "type": "quantitative", "scale": scale, "title": None, **more}

    layers = [
        {"mark": {"type": "rule", "strokeWidth": 3}, "transform": [valid("ci_low", "ci_high")],
         "encoding": {"x": at("ci_low"), "x2": {"field": "ci_high"}, "y": y, "color": colour,
                      "tooltip": tooltip}},
        {"mark": {"type": "circle", "size": 70, "opacity": 1}, "transform": [valid("estimate")],
         "encoding": {"x": at("estimate"), "y": y, "color": colour, "tooltip": tooltip,
                      "description": {"field": "desc", "type": "nominal"}}},
        {"mark": {"type": "rule", "color": "black", "strokeDash": [5, 3]},
         "transform": [valid("threshold")], "encoding": {"x": at("threshold")}},
    ]
    if data["control"].notna().any():
        layers.append({"mark": {"type": "point", "shape": "cross", "color": "black", "size": 80,
                                "filled": True},
                       "transform": [valid("control")],
                       "encoding": {"x": at("control"), "y": y, "tooltip": tooltip}})
    # panels far enough apart that one panel's last tick label does not read as the next one's
    width = max(150, FOREST_WIDTH // len(panels) - PANEL_GAP - 4)
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "title": f"{claim.replace('_', ' ')}: estimate, 95% interval, threshold (dashed)"
                 + (" · log axis" if log else ""),
        "data": {"values": values},
        "facet": {"column": {"field": "panel", "type": "nominal", "title": None, "sort": panels}},
        "spacing": PANEL_GAP,
        "spec": {"width": width, "height": 24 * len(rows), "layer": layers},
        "resolve": {"scale": {"x": "independent"}},
        "usermeta": {"embedOptions": {"renderer": "svg"}},
    }
