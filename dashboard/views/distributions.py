"""Distributions page: rel_dist, PSNR, SSIM of matches; displacement vs ε; Lipschitz estimates.

Every chart gets pre-aggregated points from dashboard/data.py (bins, quantiles, box-plot
summaries computed in DuckDB), so the page costs the same on 80 pairs as on 75,000."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, common, data

runs = common.page(
    "Distributions",
    "How the whole run looks: one curve per model, weights, embedding point and probe setting "
    "(a label names the weights, embedding point and setting only where they differ).",
)

st.header("Embedding matching", divider="gray")
rates = data.success_rates(runs)
if rates.empty:
    st.info("No successful match rows yet.")
else:
    kind = st.radio("Show as", ["histogram", "ECDF"], horizontal=True, key="dist_kind")
    points = data.match_histograms(runs) if kind == "histogram" else data.match_ecdf(runs)
    draw = charts.histogram if kind == "histogram" else charts.ecdf
    for col, name in zip(st.columns(3), data.MATCH_METRICS, strict=True):
        col.altair_chart(draw(points, name, by="series"), width="stretch")
    table = rates.set_index("series")[["success_rate", "n_ok"]].rename(
        columns={"success_rate": "success rate", "n_ok": "ok rows"})
    st.dataframe(table, width="content")

st.header("Normal space: invisible perturbations", divider="gray")
curve = data.displacement_curve(runs)
if curve.empty:
    st.info("No perturb rows yet.")
else:
    norms = sorted(curve["norm"].dropna().unique())
    for col, norm in zip(st.columns(len(norms) or 1), norms, strict=False):
        col.altair_chart(charts.displacement_vs_eps(curve, norm), width="stretch")
    st.caption("disp_over_pair = ||f(x0+δ) − f(x0)|| / ||f(x0) − f(t)||; dashed: random δ of the same norm.")

st.header("Local Lipschitz estimates", divider="gray")
steps = data.lipschitz_steps(runs)
if not steps:
    st.info("No lipschitz rows yet.")
else:
    options = ["l_jvp (exact)"] + [f"l_fd at h = {h:g}" for h in steps]
    pick = st.selectbox("Estimate", range(len(options)), format_func=options.__getitem__, key="lip_estimate")
    value, h = ("l_jvp", steps[0]) if pick == 0 else ("l_fd", steps[pick - 1])
    boxes = data.lipschitz_boxes(runs, value, h)
    st.altair_chart(charts.lipschitz_by_family(boxes[boxes["n"] > 0], value), width="stretch")
    medians = boxes.pivot(index="series", columns="family", values="median_l_jvp")
    medians.columns.name = None
    st.markdown(f"**Median l_jvp by family** (h = {h:g})")
    st.dataframe(medians, width="stretch")
