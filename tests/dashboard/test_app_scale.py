"""The dashboard on the multi-model, multi-setting scale fixture (tests/support/runs.py,
`make_scale_run`, a few thousand rows written by RunStore): every page renders, and what the pages
draw (histogram bins, ECDF quantiles, box-plot summaries, success rates, paged pair tables, read
counts) equals numbers computed here independently with pyarrow and numpy, and the named
queries' numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from tests.support.runs import SCALE_MODELS, make_scale_run

from analysis import glance
from analysis.db import open_runs
from analysis.named import run_named
from dashboard import data

PAGES = ("runs", "pairs", "distributions", "models", "sql")
CROSS_JOIN = ("SELECT count(*) FROM lipschitz a, lipschitz b, lipschitz c, lipschitz d, "
              "lipschitz e, lipschitz f")


@pytest.fixture(scope="module")
def table(scale_run: Path) -> Callable[[str], pd.DataFrame]:
    """A result table read with pyarrow (not DuckDB): the independent reference."""
    cache: dict[str, pd.DataFrame] = {}

    def read(name: str) -> pd.DataFrame:
        if name not in cache:
            files = sorted(str(p) for p in (scale_run / "results" / name).rglob("*.parquet"))
            cache[name] = ds.dataset(files, format="parquet").to_table().to_pandas()
        return cache[name]

    return read


def _runs(run: Path) -> tuple[str, ...]:
    return (str(run),)


def test_the_fixture_is_multi_model_multi_setting(table: Callable[[str], pd.DataFrame]) -> None:
    rows = sum(len(table(t)) for t in ("match", "perturb", "lipschitz"))
    assert 2_000 <= rows <= 10_000
    for probe in ("match", "perturb", "lipschitz"):
        df = table(probe)
        assert sorted(df["model"].unique()) == sorted(SCALE_MODELS)
        assert (df.groupby("model")["config_hash"].nunique() == 2).all()
        assert (df["status"] == "error").any() and (df["status"] == "ok").any()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(open_app: Callable[..., AppTest], scale_run: Path, page: str) -> None:
    at = open_app(scale_run, page=page)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.title) == 1


def test_runs_page_says_what_it_read(open_app: Callable[..., AppTest], scale_run: Path) -> None:
    at = open_app(scale_run)
    metrics = {m.label: m.value for m in at.metric}
    files = list((scale_run / "results").rglob("*.parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    units = sum(pq.read_metadata(f).num_rows for f in (scale_run / "results" / "units").rglob("*.parquet"))
    assert metrics["Units read"] == f"{units:,}"
    assert metrics["Parquet files"] == f"{len(files):,}"
    assert metrics["Rows"] == f"{rows:,}"
    assert metrics["Read in"].endswith(" s")
    captions = "\n".join(c.value for c in at.caption)
    assert f"read {units:,} units, {len(files):,} Parquet files and {rows:,} rows in" in captions


def test_histograms_are_numpy_histograms(scale_run: Path, table: Callable[[str], pd.DataFrame]) -> None:
    """Bins shared by the series of a metric, counts equal to numpy's on the same edges."""
    bins = data.match_histograms(_runs(scale_run))
    ok = table("match")[table("match")["status"] == "ok"]
    for metric in data.MATCH_METRICS:
        values = ok[metric].to_numpy(dtype=float)
        edges = np.histogram_bin_edges(values, bins=data.HIST_BINS)
        part = bins[bins["metric"] == metric]
        for cfg, group in ok.groupby("config_hash"):
            expected, _ = np.histogram(group[metric].to_numpy(dtype=float), bins=edges)
            got = np.zeros(data.HIST_BINS, dtype=int)
            mine = part[part["config_hash"] == cfg]
            index = np.searchsorted(edges, mine["bin_start"].to_numpy(), side="right") - 1
            got[np.clip(index, 0, data.HIST_BINS - 1)] = mine["count"].to_numpy()
            np.testing.assert_array_equal(got, expected, err_msg=f"{metric} {cfg}")
            np.testing.assert_allclose(mine["bin_end"] - mine["bin_start"], edges[1] - edges[0])


def test_ecdf_points_are_quantiles(scale_run: Path, table: Callable[[str], pd.DataFrame]) -> None:
    points = data.match_ecdf(_runs(scale_run))
    ok = table("match")[table("match")["status"] == "ok"]
    fractions = np.linspace(0, 1, data.ECDF_POINTS)
    for (metric, cfg), group in points.groupby(["metric", "config_hash"]):
        values = ok.loc[ok["config_hash"] == cfg, metric].to_numpy(dtype=float)
        np.testing.assert_allclose(group["fraction"], fractions)
        np.testing.assert_allclose(group["value"], np.quantile(values, fractions), rtol=1e-9)


def test_lipschitz_boxes_and_medians(scale_run: Path, table: Callable[[str], pd.DataFrame]) -> None:
    lip = table("lipschitz")
    h = float(np.sort(lip["h"].unique())[0])
    boxes = data.lipschitz_boxes(_runs(scale_run), "l_jvp", h)
    ok = lip[(lip["status"] == "ok") & (lip["h"] == h) & (lip["l_jvp"] > 0)]
    expected = ok.groupby(["config_hash", "family"])["l_jvp"]
    assert len(boxes) == expected.ngroups
    for row in boxes.itertuples(index=False):
        values = expected.get_group((row.config_hash, row.family)).to_numpy()
        assert row.n == len(values)
        np.testing.assert_allclose([row.min, row.q1, row.median, row.q3, row.max],
                                   np.quantile(values, [0, 0.25, 0.5, 0.75, 1]), rtol=1e-9)
    medians = data.lipschitz_medians(_runs(scale_run), h)
    for row in medians.itertuples(index=False):
        values = lip[(lip["status"] == "ok") & (lip["h"] == h) & (lip["config_hash"] == row.config_hash)
                     & (lip["family"] == row.family)]["l_jvp"]
        assert row.median_l_jvp == pytest.approx(float(np.median(values)))


def test_distributions_page_equals_the_named_query(open_app: Callable[..., AppTest], scale_run: Path) -> None:
    """The success-rate table shows the `equivalence` named query's rate and n for each series."""
    at = open_app(scale_run, page="distributions")
    assert not at.exception
    assert len(at.get("vega_lite_chart")) == 5  # 3 match metrics, 1 norm (linf), lipschitz box plots
    shown = next(d.value for d in at.dataframe if "success rate" in d.value.columns)
    equivalence = run_named(open_runs([scale_run]), "equivalence")
    assert len(shown) == len(equivalence) == 2 * len(SCALE_MODELS)
    rates = data.success_rates(_runs(scale_run)).set_index("config_hash")
    for row in equivalence.itertuples(index=False):
        label = rates.at[row.config_hash, "series"]
        assert shown.at[label, "success rate"] == pytest.approx(row.success_rate)
        assert shown.at[label, "ok rows"] == row.n_ok
    at.radio(key="dist_kind").set_value("ECDF").run()
    assert not at.exception and len(at.get("vega_lite_chart")) == 5


def test_pairs_are_paged_sorted_and_searched_in_sql(scale_run: Path, table: Callable[[str], pd.DataFrame]) -> None:
    match = table("match")
    runs, models = _runs(scale_run), tuple(SCALE_MODELS)
    first, total = data.pairs_page(runs, "match", models)
    assert total == len(match) and len(first) == min(data.PAGE_SIZE, len(match))
    expected = match.sort_values(["model", "run_id", "unit_id", "pair_id"])
    second, _ = data.pairs_page(runs, "match", models, page=1)
    assert list(second["pair_id"]) == list(expected["pair_id"].iloc[data.PAGE_SIZE:2 * data.PAGE_SIZE])
    # sorted by rel_dist, largest first, errors (no rel_dist) last
    top, total_ok = data.pairs_page(runs, "match", models, "failure", sort="rel_dist", descending=True,
                                    page_size=10)
    failures = match[(match["status"] == "ok") & ~match["success"].astype(bool)]
    assert total_ok == len(failures)
    np.testing.assert_allclose(top["rel_dist"], np.sort(failures["rel_dist"].to_numpy())[::-1][:10])
    # search by pair id, across models and units
    pair = str(match["pair_id"].iloc[7])
    found, n = data.pairs_page(runs, "match", models, search=pair.upper())
    assert n == (match["pair_id"] == pair).sum() and set(found["pair_id"]) == {pair}
    # perturb and lipschitz: one row per pair
    for probe in ("perturb", "lipschitz"):
        _, n = data.pairs_page(runs, probe, models)
        assert n == len(table(probe).drop_duplicates(["run_id", "unit_id", "pair_id"]))
    with pytest.raises(ValueError):
        data.pairs_page(runs, "match", models, sort="rel_dist; DROP VIEW match")


def test_pairs_page_pages(open_app: Callable[..., AppTest], scale_run: Path,
                          table: Callable[[str], pd.DataFrame]) -> None:
    at = open_app(scale_run, page="pairs")
    assert not at.exception
    n = len(table("match"))
    pages = -(-n // data.PAGE_SIZE)
    assert f"{n:,} pairs · page 1 of {pages}" in "\n".join(c.value for c in at.caption)
    assert len(at.dataframe[0].value) == data.PAGE_SIZE
    at.number_input(key="pairs_page_match").set_value(pages).run()
    assert not at.exception
    assert len(at.dataframe[0].value) == n - (pages - 1) * data.PAGE_SIZE
    assert len(at.selectbox(key="pairs_choice_match").options) == len(at.dataframe[0].value)
    at.text_input(key="pairs_search_match").input("p000003").run()  # fewer pairs: back to page 1
    assert not at.exception
    shown = at.dataframe[0].value
    assert set(shown["pair_id"]) == {"p000003"} and len(shown) == (table("match")["pair_id"] == "p000003").sum()


HEADLINE_COLUMNS = {"equivalence": "success_rate", "invisibility": "median_psnr",
                    "overgeneralisation": "n_success", "normal_space": "median_disp_over_pair",
                    "lipschitz": "median_sigma1_over_random", "lipschitz_families": "median_estimate",
                    "geometry": "median_walk_ratio", "overview": "units_ok"}


def _assert_same_table(shown: pd.DataFrame, expected: pd.DataFrame, name: str) -> None:
    """Every column of the named query's result, row for row (numbers to 1e-12)."""
    assert list(shown.columns) == list(expected.columns), name
    assert len(shown) == len(expected), name
    for column in expected.columns:
        got, want = shown[column].reset_index(drop=True), expected[column].reset_index(drop=True)
        if pd.api.types.is_numeric_dtype(want) and not pd.api.types.is_bool_dtype(want):
            np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=1e-12,
                                       err_msg=f"{name}.{column}")
        else:
            assert got.astype(str).tolist() == want.astype(str).tolist(), f"{name}.{column}"


def test_models_page_shows_the_named_queries(open_app: Callable[..., AppTest], scale_run: Path) -> None:
    """The verdict table is the `claims` query's verdicts; each headline question, once picked,
    shows its named query's whole result and (for a claim) that claim's verdict rows."""
    at = open_app(scale_run, page="models")
    assert not at.exception
    at.session_state["models_every_verdict"] = True  # the expander draws its tables once opened
    at.run()
    assert not at.exception
    con = open_runs([scale_run])
    claims = run_named(con, "claims")
    summaries = [d.value for d in at.dataframe if {"claim", "verdict"} <= set(d.value.columns)]
    assert len(summaries) == 1
    summary = summaries[0]
    # every verdict, with the setting as its short label (the full parameters are in the settings table)
    assert list(summary.columns) == [c for c in glance.SUMMARY_COLUMNS if c in claims.columns]
    assert list(summary["reason"]) == list(claims["reason"])
    assert list(summary["claim"]) == list(claims["claim"])
    assert list(summary["config_hash"]) == list(claims["config_hash"])
    assert [v.split(" ", 1)[1].replace(" ", "_") for v in summary["verdict"]] == list(claims["verdict"])
    assert list(summary["n"]) == list(claims["n"])
    np.testing.assert_allclose(summary["estimate"].astype(float), claims["estimate"].astype(float))
    assert set(claims["claim"]) == {"equivalence", "invisibility", "overgeneralisation",
                                    "normal_space", "lipschitz"}
    assert list(at.radio(key="models_question").options) == [n.replace("_", " ") for n in HEADLINE_COLUMNS]
    for name, column in HEADLINE_COLUMNS.items():
        at.radio(key="models_question").set_value(name).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        shown = [d.value for d in at.dataframe if column in d.value.columns]
        expected = run_named(con, name)
        if expected.empty:  # no rows of its probe in this run (geometry: probe equivalence)
            assert not shown and any("No rows" in i.value for i in at.info), name
            continue
        assert len(shown) == 1, name  # only the picked question's numbers are on the page
        _assert_same_table(shown[0], expected, name)
        verdicts = [d.value for d in at.dataframe
                    if {"verdict", "reason"} <= set(d.value.columns) and "claim" not in d.value.columns]
        if name in claims["claim"].tolist():
            assert len(verdicts) == 1, name
            mine = claims[claims["claim"] == name]
            assert list(verdicts[0]["config_hash"]) == list(mine["config_hash"]), name
            assert list(verdicts[0]["reason"]) == list(mine["reason"]), name
        else:
            assert not verdicts, name


def test_sql_console_stops_a_runaway_query(open_app: Callable[..., AppTest], scale_run: Path) -> None:
    at = open_app(scale_run, page="sql")
    at.number_input(key="sql_timeout").set_value(1.0)
    at.text_area(key="sql_text").input(CROSS_JOIN)
    at.button[0].click().run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("Query stopped after 1 s") for w in warnings), warnings
    assert not at.error
    at.text_area(key="sql_text").input("SELECT count(*) AS n FROM match")  # the console still works
    at.button[0].click().run()
    assert not at.warning and int(at.dataframe[0].value["n"][0]) == sum(
        pq.read_metadata(f).num_rows for f in (scale_run / "results" / "match").rglob("*.parquet"))


def test_new_files_show_up_and_a_finished_run_is_read_once(tmp_path: Path) -> None:
    """The cache key is the file listing: unchanged files give the cached result (even if the
    content were different), a new file gives a new one."""
    run = make_scale_run(tmp_path, pairs=30, pairs_per_unit=10, models=SCALE_MODELS[:1])
    runs = _runs(run)
    before = data.success_rates(runs)
    key = data.cache_key(runs)
    assert data.cache_key(runs) == key
    more = make_scale_run(tmp_path / "more", pairs=30, pairs_per_unit=10, models=("vit_new",))
    for src in (more / "results").rglob("*.parquet"):
        dest = run / src.relative_to(more)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
    data._listings.clear()  # the listing is re-taken at most once a second
    assert data.cache_key(runs) != key
    after = data.success_rates(runs)
    assert set(after["model"]) == set(before["model"]) | {"vit_new"}
