"""Models page: the headline numbers of every claim side by side across models, weights,
embedding points and probe settings (one row per setting: a probe run with several settings is
never pooled), each claim's verdict (named query `claims`, default criteria) shown beside it."""

from __future__ import annotations

import streamlit as st

from dashboard import common, data

# Named queries shown first, in this order, when analysis/ has them (others are one pick away).
HEADLINE = ("equivalence", "invisibility", "overgeneralisation", "normal_space", "lipschitz",
            "lipschitz_families", "overview")
BULKY = ("gallery",)  # PNG bytes: the Pairs page shows those
# Headline queries that state a claim: the verdicts of that claim are shown beside their numbers.
CLAIM_QUERIES = ("equivalence", "invisibility", "overgeneralisation", "normal_space", "lipschitz")
VERDICT_MARKS = {"supported": "✔ supported", "not_supported": "✘ not supported",
                 "inconclusive": "? inconclusive"}
VERDICT_COLUMNS = ["model", "weights", "embed", "setting", "verdict", "n", "statistic", "estimate",
                   "ci_low", "ci_high", "reason", "criterion", "config_hash"]

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


def verdicts_of(claim: str, params: dict[str, str | None]) -> None:
    """The verdicts on `claim`, one row per model, weights, embedding point and setting."""
    if "claims" not in queries:
        return
    accepted = {p[0] for p in queries["claims"].params}
    bound = tuple(sorted((k, v) for k, v in params.items() if k in accepted and v))
    table = data.named_query(runs, "claims", bound)
    rows = table[table["claim"] == claim] if not table.empty else table
    if rows.empty:
        st.caption(f"No verdict on {claim}: no rows of its probe yet.")
        return
    shown = rows[[c for c in VERDICT_COLUMNS if c in rows.columns]].copy()
    shown["verdict"] = shown["verdict"].map(lambda v: VERDICT_MARKS.get(v, v))
    st.markdown(f"**Verdict on {claim}** (criteria: analysis/criteria.yaml; "
                "`vitsweep report --criteria FILE` to change them)")
    st.dataframe(shown, hide_index=True, width="stretch")


def show(name: str, params: dict[str, str | None]) -> None:
    query = queries[name]
    st.subheader(name.replace("_", " ").capitalize())
    st.caption(query.description + (f" {query.notes}" if query.notes else ""))
    if name in CLAIM_QUERIES:
        verdicts_of(name, params)
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
