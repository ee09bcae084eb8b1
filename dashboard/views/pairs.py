"""Pairs page: filter, search, sort and page pairs by model, probe and outcome (in SQL: one page
of pairs at a time); one pair's images, metrics, loss, labels."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, common, data, images, pairview

runs = common.page("Pairs", "Source | matched | target | amplified difference, and every number of a pair.")
available = data.probes_and_models(runs)
if not available:
    st.info("No result rows yet in match, perturb or lipschitz.")
    st.stop()

left, mid, right = st.columns([1, 2, 2])
probe = left.selectbox("Probe", list(available), key="pairs_probe")
models = mid.multiselect("Models", available[probe], default=available[probe], key=f"pairs_models_{probe}")
outcomes = list(data.OUTCOMES.get(probe, ("all", "error")))
outcome = right.radio("Outcome", outcomes, horizontal=True, key=f"pairs_outcome_{probe}")

# Sorted and paged in SQL: a page of PAGE_SIZE pairs is all the page ever holds.
search_col, sort_col, order_col, page_col = st.columns([2, 2, 1, 1])
search = search_col.text_input("Find pair or unit id", key=f"pairs_search_{probe}",
                               placeholder="e.g. p000123 or match-s1")
sort = sort_col.selectbox("Sort by", ["", *data.SORTABLE[probe]], key=f"pairs_sort_{probe}",
                          format_func=lambda c: c or "model, run, unit, pair")
descending = order_col.toggle("Descending", key=f"pairs_desc_{probe}")
page_key = f"pairs_page_{probe}"
wanted = int(st.session_state.get(page_key, 1))
table, total = data.pairs_page(runs, probe, tuple(models), outcome, search, sort, descending, wanted - 1)
n_pages = max(1, -(-total // data.PAGE_SIZE))
if wanted > n_pages:  # the filters shrank the result: show its last page
    st.session_state[page_key] = wanted = n_pages
    table, total = data.pairs_page(runs, probe, tuple(models), outcome, search, sort, descending, wanted - 1)
page = page_col.number_input("Page", min_value=1, max_value=n_pages, step=1, key=page_key)
first = (int(page) - 1) * data.PAGE_SIZE
st.caption(f"{total:,} pairs" + (f" · page {int(page)} of {n_pages} (pairs {first + 1:,}–{first + len(table):,})"
                                  if n_pages > 1 else ""))
st.dataframe(table, hide_index=True, width="stretch", height=240)
if table.empty:
    st.info("No pair matches these filters.")
    st.stop()

records = table.to_dict("records")
with_images = data.pairs_with_images(runs, probe)
has_img = {tuple(r) for r in with_images[["run_id", "unit_id", "pair_id"]].itertuples(index=False)}
default = next((i for i, r in enumerate(records) if (r["run_id"], r["unit_id"], r["pair_id"]) in has_img), 0)
multi_run = len({r["run_id"] for r in records}) > 1
choice = st.selectbox(  # this page's pairs only: bounded, and searchable by typing
    "Pair",
    range(len(records)),
    index=default,
    format_func=lambda i: pairview.pair_label(records[i], multi_run)
    + ("  (images)" if (records[i]["run_id"], records[i]["unit_id"], records[i]["pair_id"]) in has_img else ""),
    key=f"pairs_choice_{probe}",
)
rec = records[choice]
key = (rec["run_id"], rec["unit_id"], rec["pair_id"])
rows = data.pair_rows(runs, probe, *key)
st.subheader(f"{rec['model']} · {rec['pair_id']}")
if rec["status"] == "error":
    st.warning(f"This pair failed: {rec.get('error') or 'no message'}")
config_hash = rows["config_hash"].iloc[0] if "config_hash" in rows and len(rows) else rec.get("config_hash")
st.caption("Reproduce this pair: re-runs it with the unit's seed, model and parameters and compares every stored number")
st.code(pairview.replay_command(runs, rec["run_id"], rec["pair_id"], probe, config_hash), language="bash")

gallery = data.pair_images(runs, probe, *key)
if gallery.empty:
    st.caption("No images kept for this pair (the gallery keeps a few pairs per unit).")
for img in gallery.itertuples(index=False):
    if img.variant:
        st.caption(f"variant {img.variant}")
    shown = [("source", img.src_png), (data.PROBED_CAPTION.get(probe, "perturbed"), img.adv_png),
             ("target", img.tgt_png)]
    if img.src_png and img.adv_png:
        diff, peak = images.amplified_difference(img.adv_png, img.src_png)
        gain = f"×{255 / peak:.0f}, max |Δ| = {peak}/255" if peak else "identical"
        shown.append((f"|probed − source| amplified ({gain})", diff))
    for col, (caption, png) in zip(st.columns(4), shown, strict=False):
        box = col.container(border=True)  # a frame keeps an all-white difference visible
        if png:
            box.image(png, caption=caption, width="stretch")
        else:
            box.caption(f"{caption}: not kept")

if len(rows) == 1:
    row = rows.iloc[0]
    metrics_col, labels_col = st.columns([1, 1])
    with metrics_col:
        st.markdown("**Metrics**")
        metric_table = pairview.metrics_frame(row)
        st.dataframe(metric_table, hide_index=True, width="stretch", height=min(38 + 35 * len(metric_table), 760))
    with labels_col:
        st.markdown("**Labels**")
        st.dataframe(pairview.labels_frame(row), hide_index=True, width="stretch")
        for name, same in pairview.follows_target(row).items():
            verdict = "**is the target’s**" if same else "is not the target’s"
            st.markdown(f"{name} label of the probed image {verdict}")
        losses = row.get("loss_trajectory")  # None or pd.NA for a pair in error
        if losses is not None and not isinstance(losses, type(pd.NA)) and len(losses):
            st.markdown("**Loss trajectory**")
            st.line_chart(charts.loss_trajectory(list(losses), row.get("log_every")), x_label="step", y_label="loss")
else:
    st.markdown(f"**All {len(rows)} rows of this pair**")
    st.dataframe(rows.drop(columns=["params"], errors="ignore"), hide_index=True, width="stretch")
