"""Distributions page: rel_dist, PSNR, SSIM of matches; displacement vs ε; Lipschitz estimates."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, common, data

runs = common.page(
    "Distributions",
    "How the whole run looks: one curve per model, weights, embedding point and probe setting "
    "(a label names the weights, embedding point and setting only where they differ).",
)

st.header("Embedding matching", divider="gray")
metrics = data.match_metrics(runs)
if metrics.empty:
    st.info("No successful match rows yet.")
else:
    kind = st.radio("Show as", ["histogram", "ECDF"], horizontal=True, key="dist_kind")
    cols = st.columns(3)
    for col, name in zip(cols, ("rel_dist", "psnr", "ssim"), strict=True):
        draw = charts.histogram if kind == "histogram" else charts.ecdf
        chart = draw(metrics, name, by="series")
        col.altair_chart(chart, width="stretch")
    rate = metrics.groupby("series")["success"].mean().rename("success rate").to_frame()
    st.dataframe(rate, width="content")

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
    if pick == 0:
        est = data.lipschitz_estimates(runs, steps[0])
        st.altair_chart(charts.lipschitz_by_family(est, "l_jvp"), width="stretch")
    else:
        est = data.lipschitz_estimates(runs, steps[pick - 1])
        st.altair_chart(charts.lipschitz_by_family(est, "l_fd"), width="stretch")
    medians = est.groupby(["series", "family"])["l_jvp"].median().unstack("family")
    st.markdown("**Median l_jvp by family**")
    st.dataframe(medians, width="stretch")
