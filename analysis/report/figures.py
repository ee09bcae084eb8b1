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
