"""Models page: the headline numbers of every claim side by side across models, weights,
embedding points and probe settings (one row per setting: a probe run with several settings is
never pooled)."""

from __future__ import annotations

import streamlit as st

from dashboard import common, data

# Named queries shown first, in this order, when analysis/ has them (others are one pick away).
HEADLINE = ("equivalence", "invisibility", "overgeneralisation", "normal_space", "lipschitz",
            "lipschitz_families", "overview")
BULKY = ("gallery",)  # PNG bytes: the Pairs page shows those

runs = common.page(
    "Models",
    "The same numbers, one row per model, weights, embedding point and probe setting "
    "(named queries from analysis/; `setting` names the parameters that differ between settings).",
)
queries = {q.name: q for q in data.named_queries()}
run_ids = data.run_ids(runs)
run_id = ""
if len(run_ids) > 1:
    run_id = st.selectbox("Run", ["", *run_ids], format_func=lambda r: r or "all runs", key="models_run")


def show(name: str, params: dict[str, str | None]) -> None:
    query = queries[name]
    st.subheader(name.replace("_", " ").capitalize())
    st.caption(query.description + (f" {query.notes}" if query.notes else ""))
    accepted = {p[0] for p in query.params}
    bound = tuple(sorted((k, v) for k, v in params.items() if k in accepted and v))
    result = data.named_query(runs, name, bound)
    if result.empty:
        st.info("No rows for this question yet.")
    else:
        st.dataframe(data.displayable(result), hide_index=True, width="stretch")


for name in (n for n in HEADLINE if n in queries):
    show(name, {"run_id": run_id or None})

st.header("Any named query", divider="gray")
others = [n for n in queries if n not in HEADLINE and n not in BULKY]
if others:
    pick = st.selectbox("Query", others, key="models_other")
    values: dict[str, str | None] = {}
    cols = st.columns(max(1, len(queries[pick].params)))
    for col, (pname, default, help_text) in zip(cols, queries[pick].params, strict=False):
        values[pname] = col.text_input(pname, value=default or "", help=help_text or None, key=f"models_{pick}_{pname}")
    show(pick, values)
