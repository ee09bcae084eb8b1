"""`vitsweep report` on the multi-model, multi-setting scale fixture: the header says what was
read, the figures' inputs (binned and summarised in DuckDB) equal numpy's on the same rows, and
every claim and gallery block of every model and setting is there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from analysis import report
from analysis.report import model
from analysis.db import open_runs
from tests.support.runs import SCALE_MODELS


def _table(run: Path, name: str) -> pd.DataFrame:
    files = sorted(str(p) for p in (run / "results" / name).rglob("*.parquet"))
    return ds.dataset(files, format="parquet").to_table().to_pandas()


def test_report_header_says_what_it_read(scale_run: Path, tmp_path: Path) -> None:
    paths = report.write_report([scale_run], tmp_path / "out", gallery_limit=2)
    files = list((scale_run / "results").rglob("*.parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    units = sum(pq.read_metadata(f).num_rows for f in (scale_run / "results" / "units").rglob("*.parquet"))
    expected = f"read {units:,} units, {len(files):,} Parquet files and {rows:,} rows in "
    for key in ("html", "md"):
        assert expected in paths[key].read_text(encoding="utf-8"), key
    numbers = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert sorted({s["model"] for s in numbers["sections"]}) == sorted(SCALE_MODELS)
    md = paths["md"].read_text(encoding="utf-8")
    # one equivalence claim per model and match setting, each with its figure
    assert md.count("1. Equivalence") == 2 * len(SCALE_MODELS)
    assert len(list((tmp_path / "out").glob("fig-*-match.png"))) == 2 * len(SCALE_MODELS)
    assert len(list((tmp_path / "out").glob("fig-*-lipschitz-families.png"))) == 2 * len(SCALE_MODELS)
    # the gallery: at most 2 triples per model and match setting
    assert len(list((tmp_path / "out").glob("gallery-*-src.png"))) == 2 * 2 * len(SCALE_MODELS)


def test_match_histograms_equal_numpy(scale_run: Path) -> None:
    match = _table(scale_run, "match")
    ok = match[match["status"] == "ok"]
    con = open_runs([scale_run])
    rel = model._histograms(con, model._MATCH_REL)
    psnr = model._histograms(con, model._MATCH_PSNR)
    assert set(rel) == set(ok["config_hash"])
    for cfg, group in ok.groupby("config_hash"):
        values = group["rel_dist"].to_numpy(dtype=float)
        edges = np.histogram_bin_edges(values, bins=min(30, max(5, values.size)))
        success = group["success"].fillna(False).astype(bool).to_numpy()
        for part, mask in (("success", success), ("no success", ~success)):
            got_edges, got = rel[cfg][part]
            np.testing.assert_allclose(got_edges, edges)
            np.testing.assert_array_equal(got, np.histogram(values[mask], bins=edges)[0])
        p = group.loc[success, "psnr"].to_numpy(dtype=float)
        p_edges = np.histogram_bin_edges(p, bins=min(30, max(5, p.size)))
        np.testing.assert_allclose(psnr[cfg]["psnr"][0], p_edges)
        np.testing.assert_array_equal(psnr[cfg]["psnr"][1], np.histogram(p, bins=p_edges)[0])


def test_lipschitz_box_summaries_equal_numpy(scale_run: Path) -> None:
    """Per setting and family: quantiles of the per-direction estimate (l_jvp of the direction)."""
    lip = _table(scale_run, "lipschitz")
    ok = lip[lip["status"] == "ok"]
    per_direction = ok.groupby(["config_hash", "family", "run_id", "unit_id", "pair_id", "direction"])["l_jvp"].max()
    boxes = model._df(open_runs([scale_run]), model._LIP_BOXES_SQL)
    assert len(boxes) == per_direction.reset_index().groupby(["config_hash", "family"]).ngroups
    for row in boxes.itertuples(index=False):
        values = per_direction.loc[(row.config_hash, row.family)].to_numpy()
        assert row.n == values.size
        np.testing.assert_allclose([row.p05, row.q1, row.median, row.q3, row.p95],
                                   np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95]), rtol=1e-9)
    points = model._df(open_runs([scale_run]), model._LIP_POINTS_SQL)
    counts = points.groupby(["config_hash", "family"]).size()
    assert (counts <= 200).all() and len(counts) == len(boxes)
