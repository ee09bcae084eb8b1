"""Runs page: progress of each run (live while it runs), what was read (units, files, rows, time),
failures with their errors, spec, manifest."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common, data, formatting

runs = common.page("Runs", "Progress, failures, spec and manifest of each run.", stop_if_empty=False)
statuses = {str(s.path): s for s in data.statuses(common.all_runs())}


def progress_panel(run: str) -> None:
    prog = data.progress(run)
    if prog is None:
        st.info("No progress.json in this run (it has not started, or was written by another tool).")
        return
    done, total = int(prog.get("units_done") or 0), int(prog.get("units_total") or 0)
    cols = st.columns(6)
    cols[0].metric("State", str(prog.get("state", "?")))
    cols[1].metric("Units done", f"{done} / {total}")
    cols[2].metric("Units failed", int(prog.get("units_failed") or 0))
    cols[3].metric("Pairs done", int(prog.get("pairs_done") or 0), help=f"errors: {prog.get('pairs_error', 0)}")
    cols[4].metric("Pairs/s", formatting.number(prog.get("pairs_per_s"), 3))
    cols[5].metric("ETA", formatting.duration(prog.get("eta_s")))
    if total:
        st.progress(min(done / total, 1.0), text=f"{done} of {total} units")
    st.caption(
        f"elapsed {formatting.duration(prog.get('elapsed_s'))} · started {prog.get('started_at', '—')} · "
        f"updated {prog.get('updated_at', '—')}"
    )
    plan_panel(run, prog)
    failures = prog.get("failures") or []
    if failures:
        st.subheader("Failed units")
        st.dataframe(pd.DataFrame(failures), hide_index=True, width="stretch")


def plan_panel(run: str, prog: dict) -> None:
    """The plan `vitsweep run` made at its start (plan.json): the work and cost it predicted."""
    plan = data.plan(run)
    if plan is None:
        return
    cols = st.columns(5)
    cols[0].metric("Planned units", int(plan.get("units") or 0), help=f"already done at the start: {plan.get('units_done', 0)}")
    cols[1].metric("Planned pairs", formatting.number(plan.get("unit_pairs")), help="pairs summed over units")
    cols[2].metric("Image passes ≤", formatting.number(plan.get("image_passes")),
                   help=f"expected: {formatting.number(plan.get('image_passes_expected'))}")
    cols[3].metric("GPU-hours ≤", formatting.number(plan.get("gpu_hours"), 3))
    cols[4].metric("Planned time ≤", formatting.duration(plan.get("seconds")), help="on one device")
    sources = "; ".join(plan.get("rate_sources") or []) or "no rate known for these models"
    st.caption(f"Plan made {plan.get('created_at', '—')} ({sources}). Pairs done so far: "
               f"{int(prog.get('pairs_done') or 0)} of {formatting.number(plan.get('unit_pairs'))} planned.")
    rows = plan.get("rows") or []
    if rows:
        with st.expander("Plan per model and probe setting"):
            st.dataframe(pd.DataFrame([{k: r.get(k) for k in ("model", "weights", "probe", "setting", "units", "pairs",
                                                             "image_passes", "image_passes_expected")} for r in rows]),
                         hide_index=True, width="stretch")


for run, status in statuses.items():
    st.header(common.run_label(run), divider="gray")
    st.caption(run)
    if status.state in ("missing", "not_a_dir"):
        continue
    prog = data.progress(run) or {}
    if prog.get("state") == "running":
        st.fragment(run_every=5)(progress_panel)(run)
    else:
        progress_panel(run)
    spec_tab, manifest_tab = st.tabs(["Spec", "Manifest"])
    with spec_tab:
        spec = data.spec_text(run)
        if spec:
            st.code(spec, language="yaml")
        else:
            st.info("No spec.yaml in this run.")
    with manifest_tab:
        manifest = data.manifest(run)
        if manifest:
            st.json(manifest)
        else:
            st.info("No manifest.json in this run (yet).")

if runs:
    stats = data.read_stats(runs)
    st.header("Results", divider="gray")
    cols = st.columns(4)
    cols[0].metric("Units read", f"{stats.units:,}")
    cols[1].metric("Parquet files", f"{stats.files:,}")
    cols[2].metric("Rows", f"{stats.rows:,}")
    cols[3].metric("Read in", f"{stats.seconds:.1f} s")
    st.caption(f"The dashboard {stats.text()} (" + ", ".join(
        f"{table} {n:,}" for table, n in stats.rows_by_table.items()) + "); results are cached "
        "until a file is added or rewritten.")
    st.header("Errors in the results", divider="gray")
    failed = data.failed_units(runs)
    if len(failed):
        st.subheader("Units that failed after retries")
        st.dataframe(failed, hide_index=True, width="stretch")
    errors = data.pair_errors(runs)
    if len(errors):
        st.subheader("Pairs with errors")
        st.dataframe(errors, hide_index=True, width="stretch")
    if not len(failed) and not len(errors):
        st.success("No failed units or pairs.")
    with st.expander("Rows per table"):
        st.dataframe(data.row_counts(runs), hide_index=True, width="stretch")
