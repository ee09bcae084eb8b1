"""The report's plots, drawn with matplotlib's Agg backend into PNG bytes (no display, no files).

Each function takes what it draws for one model, weights, embedding point and probe setting, already
aggregated in DuckDB by analysis/report/model.py (histogram bins, quantiles, a bounded sample of points,
or the rows of an aggregate named query), and returns PNG bytes, or None when there is nothing to
draw: a figure costs the same on 80 pairs as on 75,000.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # before pyplot: never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_FAMILY_ORDER = ("top", "grad", "match", "random", "off_top", "null")
_FAMILY_COLOURS = {"top": "#d62728", "grad": "#ff7f0e", "match": "#1f77b4", "random": "#7f7f7f",
                   "off_top": "#8c564b", "null": "#2ca02c"}


def _png(fig: Figure) -> bytes:
    """Fixed margins rather than tight_layout: layout passes double the drawing time."""
    buf = io.BytesIO()
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.17, top=0.9, wspace=0.3)
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _log_axis(ax: Axes, which: str) -> None:
    """A log axis labelled in plain text ("100", "0.01"): the default labels are mathtext,
    whose layout costs most of a figure's drawing time; minor ticks stay unlabelled."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _finite(values: pd.Series) -> np.ndarray:
    array = np.asarray(values.dropna(), dtype=float)
    return array[np.isfinite(array)]


def match_distributions(hists: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes | None:
    """Histograms of the final rel_dist (success and not, on shared bins) and of the PSNR of
    successful matches, from pre-computed (edges, counts) per part: "success", "no success",
    "psnr" (analysis.report bins them in DuckDB)."""
    if not any(part in hists for part in ("success", "no success")):
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, colour in (("success", "#1f77b4"), ("no success", "#ff7f0e")):
        if label in hists:
            edges, counts = hists[label]
            ax1.stairs(counts, edges, fill=True, alpha=0.7, color=colour,
                       label=f"{label} (n={int(counts.sum())})")
    ax1.set_xlabel("final rel_dist = ||f(x) - f(t)|| / ||f(t)||")
    ax1.set_ylabel("pairs")
    ax1.legend(fontsize=8)
    if "psnr" in hists:
        edges, counts = hists["psnr"]
        ax2.stairs(counts, edges, fill=True, color="#2ca02c")
        ax2.set_xlabel("PSNR of successful matches (dB)")
    else:
        ax2.text(0.5, 0.5, "no successful match", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_axis_off()
    return _png(fig)


def eps_curves(normal: pd.DataFrame) -> bytes | None:
    """Median disp_over_pair against eps per norm, with the random baseline at the same eps."""
    if normal.empty:
        return None
    norms = sorted(normal["norm"].dropna().unique())
    fig, axes = plt.subplots(1, len(norms), figsize=(4.5 * len(norms), 3.2), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        part = normal[normal["norm"] == norm].sort_values("eps")
        x = part["eps_255"] if norm == "linf" else part["eps"]
        ax.plot(x, part["median_disp_over_pair"], "o-", label="optimised δ", color="#d62728")
        ax.fill_between(x, part["p10_disp_over_pair"], part["p90_disp_over_pair"],
                        color="#d62728", alpha=0.15, label="10-90% of pairs")
        ax.plot(x, part["median_random_disp_over_pair"], "s--", label="random δ, same norm",
                color="#7f7f7f")
        ax.axhline(1.0, color="black", lw=0.7, ls=":")
        ax.set_xlabel("ε (8-bit levels)" if norm == "linf" else "ε (L2, pixel units)")
        ax.set_ylabel("||f(x0+δ) - f(x0)|| / ||f(x0) - f(t)||")
        ax.set_title(f"{norm}")
        ax.legend(fontsize=8)
    return _png(fig)


def lipschitz_families(boxes: pd.DataFrame, points: pd.DataFrame) -> bytes | None:
    """Per-direction Lipschitz estimates by family (top, grad, match, random, off_top, null) on a log axis:
    a box per family from pre-computed quantiles (`boxes`: family, p05, q1, median, q3, p95, n;
    whiskers at the 5th and 95th percentile) and a sample of the estimates as dots (`points`:
    family, estimate)."""
    if boxes.empty:
        return None
    present = set(boxes["family"])
    families = [f for f in _FAMILY_ORDER if f in present] + sorted(present - set(_FAMILY_ORDER))
    by_family = boxes.set_index("family")
    stats = [{"label": f, "whislo": by_family.at[f, "p05"], "q1": by_family.at[f, "q1"],
              "med": by_family.at[f, "median"], "q3": by_family.at[f, "q3"],
              "whishi": by_family.at[f, "p95"], "fliers": []} for f in families]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bxp(stats, showfliers=False)
    rng = np.random.default_rng(0)
    for i, family in enumerate(families, start=1):
        ys = _finite(points.loc[points["family"] == family, "estimate"]) if not points.empty else np.array([])
        xs = i + rng.uniform(-0.15, 0.15, size=ys.size)
        ax.scatter(xs, ys, s=8, alpha=0.6, color=_FAMILY_COLOURS.get(family, "#9467bd"))
    _log_axis(ax, "y")
    ax.set_ylabel("||J v|| (directional Lipschitz estimate)")
    ax.set_xlabel("direction family")
    return _png(fig)


def nonlinearity_curves(nonlin: pd.DataFrame) -> bytes | None:
    """Median nonlinearity |l_fd - l_jvp| / l_jvp against h per family, log-log."""
    part = nonlin[(nonlin["h"] > 0) & (nonlin["median_nonlinearity"] > 0)] if not nonlin.empty else nonlin
    if part.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for family in sorted(part["family"].unique(), key=lambda f: (f not in _FAMILY_ORDER, f)):
        rows = part[part["family"] == family].sort_values("h")
        ax.plot(rows["h"], rows["median_nonlinearity"], "o-", label=family,
                color=_FAMILY_COLOURS.get(family))
    _log_axis(ax, "x")
    if math.isfinite(part["median_nonlinearity"].max()):
        _log_axis(ax, "y")
    ax.set_xlabel("step size h (L2 pixel units)")
    ax.set_ylabel("median |L_fd - L_jvp| / L_jvp")
    ax.legend(fontsize=8)
    return _png(fig)


def _log_ticks(ax: Axes) -> None:
    """Enough labelled ticks on a log x axis that spans less than a few decades: 1, 2, 5 × 10^k
    (or every integer multiple where that gives fewer than three)."""
    lo, hi = ax.get_xlim()
    if not (lo > 0 and hi > lo):
        return
    for subs in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in subs if lo <= m * 10.0 ** k <= hi]
        if len(ticks) >= 3:
            break
    ax.set_xticks(ticks)
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlim(lo, hi)


_VERDICT_COLOURS = {"supported": "#2ca02c", "not_supported": "#d62728", "inconclusive": "#7f7f7f"}


def forest(points: list[dict], claim: str) -> bytes | None:
    """The forest plot of one claim from analysis.glance.forest_points: a panel per check
    (statistic, and norm where it has one), a line per model and setting (`row`), the estimate
    as a dot coloured by the check's verdict, its interval as a horizontal bar, the threshold as
    a dashed vertical line and the negative control's value (where the claims rows carry one)
    as a black ×. Ratio statistics (`log`) on a log axis; values a log axis cannot show, and
    infinite ones, are left out (the grid and the tables state them)."""
    mine = [p for p in points if p["claim"] == claim]
    if not mine:
        return None
    panels = list(dict.fromkeys(p["panel"] for p in mine))
    rows = list(dict.fromkeys(p["row"] for p in mine))
    height = 0.9 + 0.32 * len(rows)
    label_in = 0.068 * max(len(r) for r in rows) + 0.15  # 8-point tick labels, in inches
    fig, axes = plt.subplots(1, len(panels), figsize=(min(label_in + 3.2 * len(panels), 13.5), height),
                             sharey=True, squeeze=False)
    y_of = {r: len(rows) - 1 - i for i, r in enumerate(rows)}
    for ax, panel in zip(axes[0], panels):
        part = [p for p in mine if p["panel"] == panel]
        log = any(p["log"] for p in part)

        def ok(v: float | None, log: bool = log) -> bool:
            return v is not None and math.isfinite(v) and (v > 0 or not log)

        for p in part:
            y = y_of[p["row"]]
            colour = _VERDICT_COLOURS.get(p["verdict"], "#1f77b4")
            if ok(p["ci_low"]) and ok(p["ci_high"]):
                ax.plot([p["ci_low"], p["ci_high"]], [y, y], color=colour, lw=2.2, solid_capstyle="butt")
            if ok(p["estimate"]):
                ax.plot([p["estimate"]], [y], "o", color=colour, ms=6)
            if ok(p["control"]):
                ax.plot([p["control"]], [y], "x", color="black", ms=7, mew=1.6)
        thresholds = sorted({p["threshold"] for p in part if ok(p["threshold"])})
        for t in thresholds:
            ax.axvline(t, color="black", lw=0.9, ls="--")
        ax.margins(x=0.08)
        if log:
            _log_axis(ax, "x")
            _log_ticks(ax)
        ax.set_title(panel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.grid(axis="x", color="#eee", lw=0.6)
    axes[0][0].set_yticks(range(len(rows)))
    axes[0][0].set_yticklabels([rows[len(rows) - 1 - y] for y in range(len(rows))], fontsize=8)
    buf = io.BytesIO()
    left = min(0.5, label_in / fig.get_figwidth())
    fig.subplots_adjust(left=left, right=0.98, bottom=0.36 / height, top=1 - 0.3 / height,
                        wspace=0.08)
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


_CURVE_STYLE = {"target": ("#1f77b4", "‖f(y) − f(target)‖ on target → x_matched"),
                "linear": ("#ff7f0e", "miss of f(x0) + t J (x_matched − x0) on x0 → x_matched"),
                "walk": ("#2ca02c", "equivalence walk (J's top directions removed)"),
                "random_walk": ("#7f7f7f", "walk along random directions")}


def geometry_curves(curves: pd.DataFrame) -> bytes | None:
    """The headline's curves for one setting (analysis/queries/report/equivalence_curves.sql):
    left, along the segments of path linearity (t from 0 to 1); right, after each walk step,
    with the walk's bound δ dashed. Lines are medians over pairs, bands the 10th to 90th
    percentiles; every value is relative to the pair distance ‖f(x0) − f(target)‖."""
    if curves is None or curves.empty:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, names in ((ax1, ("target", "linear")), (ax2, ("walk", "random_walk"))):
        drawn = False
        for name in names:
            part = curves[curves["curve"] == name].sort_values("i")
            if part.empty:
                continue
            if name in ("target", "linear"):
                k = float(part["k"].max())
                x = (part["i"].to_numpy(dtype=float) - 1) / max(k - 1, 1)
            else:
                x = part["i"].to_numpy(dtype=float)
            colour, label = _CURVE_STYLE[name]
            ax.fill_between(x, part["p10"].to_numpy(dtype=float), part["p90"].to_numpy(dtype=float),
                            color=colour, alpha=0.2, lw=0)
            ax.plot(x, part["p50"].to_numpy(dtype=float), color=colour,
                    label=f"{label} (n = {int(part['n'].max())})")
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ax.legend(fontsize=7)
        ax.set_ylabel("relative to the pair distance", fontsize=8)
        ax.tick_params(labelsize=8)
    ax1.set_xlabel("t along the segment")
    ax2.set_xlabel("walk step")
    delta = curves["delta"].dropna()
    if len(delta) and ax2.axison:
        ax2.axhline(float(delta.iloc[0]), color="black", lw=0.9, ls="--")
    return _png(fig)
