"""SQL page: a read-only console over the run's views (analysis.guard refuses everything else);
DuckDB stops a query that runs past the time limit (10 s unless changed), and the server keeps
serving."""

from __future__ import annotations

import streamlit as st

from dashboard import common, data

runs = common.page("SQL", "One read-only SELECT over the views: match, perturb, lipschitz, pairs, units, images.")

with st.form("sql_form"):
    sql = st.text_area("Query", value=data.EXAMPLE_SQL, height=160, key="sql_text")
    left, right = st.columns(2)
    limit = left.number_input("Row limit", min_value=1, max_value=100_000, value=1_000, step=1_000, key="sql_limit")
    timeout = right.number_input("Time limit (s)", min_value=1.0, max_value=600.0, value=data.SQL_TIMEOUT_S,
                                 step=5.0, key="sql_timeout",
                                 help="DuckDB stops a query that runs longer (default: $VITSWEEP_SQL_TIMEOUT or 10 s)")
    submitted = st.form_submit_button("Run query", type="primary")
if submitted or "sql_last" not in st.session_state:  # the example query runs on first load
    st.session_state["sql_last"] = (sql, int(limit), float(timeout))

query, row_limit, time_limit = st.session_state["sql_last"]
try:
    result = data.run_sql(runs, query, limit=row_limit, timeout_s=time_limit)
except data.QueryStopped as err:
    st.warning(f"{err}: make the query cheaper (filter, aggregate, LIMIT) or raise the time limit.",
               icon=":material/timer_off:")
except data.QueryRefused as err:
    st.warning(f"Query refused: {err}", icon=":material/block:")
except data.QueryFailed as err:
    st.error(f"Query failed: {err}", icon=":material/error:")
else:
    st.caption(f"{len(result)} rows" + (" (limit reached)" if len(result) >= row_limit else ""))
    st.dataframe(data.displayable(result), hide_index=True, width="stretch", key="sql_result")

with st.expander("Views and their columns"):
    st.dataframe(data.view_columns(runs), hide_index=True, width="stretch")
