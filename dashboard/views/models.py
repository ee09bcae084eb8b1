"""Models page: the verdicts at a glance (the model × claim grid and a forest plot per claim, from
the named query `claims`, default criteria; analysis/glance.py, as at the top of the report),
every verdict in one table with its setting's short label and the settings' legend (in an
expander, drawn once opened), then the numbers behind the claim the user picks (its headline
named query, with that claim's verdict rows beside it; one row per setting: a probe run with
several settings is never pooled), then any other named query.

A first visit runs `claims` only: the grid and the forest plots are drawn from its rows (cached
like every other read). A headline query runs when its question is picked: on a 75,000-pair run
each reads every file of its probe, and a table adds the data grid's code to the browser's load;
a first visit that did both took 0.4 s more."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis import glance
from analysis.claims import random_weights_caveat
from dashboard import charts, common, data

# The questions the page offers first, in this order, when analysis/ has them (others are one pick
# away under "Any named query").
HEADLINE = ("equivalence", "invisibility", "overgeneralisation", "normal_space", "lipschitz",
            "lipschitz_families", "geometry", "overview")
BULKY = ("gallery",)  # PNG bytes: the Pairs page shows those
# Headline queries that state claims: the verdicts of those claims are shown beside their numbers.
CLAIM_QUERIES = {"equivalence": ("equivalence",), "invisibility": ("invisibility",),
                 "overgeneralisation": ("overgeneralisation",), "normal_space": ("normal_space",),
                 "lipschitz": ("lipschitz",), "geometry": ("large_equivalence", "piecewise_linear")}
VERDICT_MARKS = {"supported": "✔ supported", "not_supported": "✘ not supported",
                 "inconclusive": "? inconclusive"}
VERDICT_COLUMNS = ["model", "weights", "embed", "setting", "verdict", "n", "statistic", "estimate",
                   "ci_low", "ci_high", "threshold", "reason", "config_hash", "criterion"]
DETAILS_KEY = "models_every_verdict"  # the expander with every verdict and the settings' table
CRITERIA_NOTE = ("criteria: analysis/criteria.yaml; `vitsweep report --criteria FILE` to change them")

runs = common.page(
    "Models",
    "Every claim's verdict per model and probe setting at a glance, then the numbers behind one "
    "claim at a time (named queries from analysis/).",
)
queries = {q.name: q for q in data.named_queries()}
run_ids = data.run_ids(runs)
run_id = ""
if len(run_ids) > 1:
    run_id = st.selectbox("Run", ["", *run_ids], format_func=lambda r: r or "all runs", key="models_run")


def bound_params(name: str, params: dict[str, str | None]) -> tuple[tuple[str, str | None], ...]:
    """The parameters `name` accepts, as the cached reads take them."""
    accepted = {p[0] for p in queries[name].params}
    return tuple(sorted((k, v) for k, v in params.items() if k in accepted and v))


def marked(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The verdict rows' `columns` (those present), verdicts with their marks and `setting` as
    its short label (where the rows' probe has several settings; else "—")."""
    shown = rows[[c for c in columns if c in rows.columns]].copy()
    shown["verdict"] = shown["verdict"].map(lambda v: VERDICT_MARKS.get(v, v))
    if "setting" in shown.columns and "config_hash" in rows.columns:
        by_hash, _ = glance.settings_of(rows.to_dict("records"))
        shown["setting"] = [by_hash[h].label or "—" if h in by_hash else s
                            for h, s in zip(rows["config_hash"], shown["setting"])]
    return shown


def all_verdicts(params: dict[str, str | None]) -> None:
    """The verdicts at a glance (grid, forest plots), every verdict in one table and the
    settings' legend."""
    if "claims" not in queries:
        return
    table = data.named_query(runs, "claims", bound_params("claims", params))
    st.subheader("Verdicts at a glance")
    if table.empty:
        st.info("No verdicts yet: no probe rows.")
        return
    records = table.to_dict("records")
    caveat = random_weights_caveat(sorted({str(r["weights"]) for r in records}))
    if caveat:
        st.warning(caveat)
    st.html(glance.grid_html(records))
    grid = glance.verdict_grid(records)
    points = pd.DataFrame(glance.forest_points(records))
    st.caption(f"The named query `claims` ({CRITERIA_NOTE}); forest plots: the estimate of each "
               "check (dot, coloured by its verdict), its 95% interval (bar), the threshold "
               "(dashed), the negative control (cross, where the run has one); ratios on a log "
               "axis.")
    for claim in grid.claims:
        spec = charts.forest(points, claim)
        if spec is not None:
            st.vega_lite_chart(spec=spec, width="content")
    # drawn only once opened: a table on the page costs its first visit about 0.3 s in the
    # browser (the data grid's code loads), which the grid and the plots above already answer
    with st.expander("Every verdict, and the settings' parameters", expanded=False,
                     key=DETAILS_KEY, on_change="rerun") as details:
        if details.open:
            st.dataframe(marked(table, list(glance.SUMMARY_COLUMNS)), hide_index=True,
                         width="stretch")
            st.dataframe(pd.DataFrame(glance.setting_rows(grid), columns=list(glance.SETTING_COLUMNS)),
                         hide_index=True, width="stretch")


def verdicts_of(claims: tuple[str, ...], params: dict[str, str | None]) -> None:
    """The verdicts on `claims`, one row per claim, model, weights, embedding point and setting."""
    if "claims" not in queries:
        return
    table = data.named_query(runs, "claims", bound_params("claims", params))
    rows = table[table["claim"].isin(claims)] if not table.empty else table
    names = " and ".join(claims)
    if rows.empty:
        st.caption(f"No verdict on {names}: no rows of its probe yet.")
        return
    st.markdown(f"**Verdict on {names}** ({CRITERIA_NOTE})")
    columns = ["claim", *VERDICT_COLUMNS] if len(claims) > 1 else VERDICT_COLUMNS
    st.dataframe(marked(rows, columns), hide_index=True, width="stretch")


def show(name: str, params: dict[str, str | None]) -> None:
    query = queries[name]
    st.subheader(name.replace("_", " ").capitalize())
    st.caption(query.description + (f" {query.notes}" if query.notes else ""))
    if name in CLAIM_QUERIES:
        verdicts_of(CLAIM_QUERIES[name], params)
    result = data.named_query(runs, name, bound_params(name, params))
    if result.empty:
        st.info("No rows for this question yet.")
    else:
        st.dataframe(data.displayable(result), hide_index=True, width="stretch")


all_verdicts({"run_id": run_id or None})

headline = [n for n in HEADLINE if n in queries]
if headline:
    st.header("The numbers behind a claim", divider="gray")
    question = st.radio("Question", headline, horizontal=True, key="models_question", index=None,
                        format_func=lambda n: n.replace("_", " "))
    if question is None:
        st.caption("Pick a question: its verdicts and the numbers behind them (nothing runs "
                   "until you do).")
    else:
        show(question, {"run_id": run_id or None})

st.header("Any named query", divider="gray")
others = [n for n in queries if n not in HEADLINE and n not in BULKY and n != "claims"]  # claims: above
pick = st.selectbox("Query", others, key="models_other", index=None,
                    placeholder="Pick a named query (nothing runs until you do)") if others else None
if pick is not None:
    values: dict[str, str | None] = {}
    cols = st.columns(max(1, len(queries[pick].params)))
    for col, (pname, default, help_text) in zip(cols, queries[pick].params, strict=False):
        values[pname] = col.text_input(pname, value=default or "", help=help_text or None, key=f"models_{pick}_{pname}")
    show(pick, values)
