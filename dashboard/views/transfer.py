"""Transfer page (issue 23): matched images of model A on every model B of the run, as the A x B
matrix of target-closer rates (named query `transfer`, exact Clopper-Pearson intervals)."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard import common, data

runs = common.page(
    "Transfer",
    "Each matched image of model A (the 8-bit image A's re-check scored), embedded by every model B "
    "of the run: the share B embeds nearer the target than the source. The diagonal is A itself.",
)

condition = st.radio("A's matches counted", ["success", "quant_success", "all"], horizontal=True,
                     key="transfer_condition")
matrix = data.transfer_matrix(runs, condition)
if matrix.empty:
    st.info("No transfer rows: the run's spec needs `transfer: true` (and at least one successful match).")
else:
    cells = matrix.assign(A=matrix["model_a"] + " · " + matrix["setting"].astype(str),
                          B=matrix["model_b"] + " · " + matrix["setting_b"].astype(str))
    heat = alt.Chart(cells).mark_rect().encode(
        x=alt.X("B:N", title="B: evaluates the image"), y=alt.Y("A:N", title="A: matched the image"),
        color=alt.Color("target_closer_rate:Q", scale=alt.Scale(domain=[0, 1]), title="target-closer rate"),
        tooltip=["A", "B", "n", "target_closer_rate", "ci_low", "ci_high"])
    text = heat.mark_text(baseline="middle").encode(text=alt.Text("target_closer_rate:Q", format=".2f"),
                                                     color=alt.value("black"))
    st.altair_chart(heat + text, width="stretch")
    st.dataframe(matrix[["model_a", "setting", "model_b", "weights_b", "embed_b", "same_setting", "n",
                         "target_closer_rate", "ci_low", "ci_high", "median_rel_dist_tgt",
                         "head_target_rate", "zeroshot_target_rate", "resized"]],
                 hide_index=True, width="stretch")
