"""SQL page: a read-only console over the run's views (analysis.guard refuses everything else)."""

from __future__ import annotations

import streamlit as st

from dashboard import common, data

runs = common.page("SQL", "One read-only SELECT over the views: match, perturb, lipschitz, pairs, units, images.")

with st.form("sql_form"):
    sql = st.text_area("Query", value=data.EXAMPLE_SQL, height=160, key="sql_text")
    limit = st.number_input("Row limit", min_value=1, max_value=100_000, value=1_000, step=1_000, key="sql_limit")
    submitted = st.form_submit_button("Run query", type="primary")
if submitted or "sql_last" not in st.session_state:  # the example query runs on first load
    st.session_state["sql_last"] = (sql, int(limit))

query, row_limit = st.session_state["sql_last"]
try:
    result = data.run_sql(runs, query, limit=row_limit)
except data.QueryRefused as err:
    st.warning(f"Query refused: {err}", icon=":material/block:")
except data.QueryFailed as err:
    st.error(f"Query failed: {err}", icon=":material/error:")
else:
    st.caption(f"{len(result)} rows" + (" (limit reached)" if len(result) >= row_limit else ""))
    st.dataframe(data.displayable(result), hide_index=True, width="stretch", key="sql_result")

with st.expander("Views and their columns"):
    st.dataframe(data.view_columns(runs), hide_index=True, width="stretch")
