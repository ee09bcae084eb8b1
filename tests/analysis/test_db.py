"""analysis.db: views over a fixture run's Parquet files, a run still being written, unions."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from analysis.db import (
    DERIVED_VIEWS,
    VIEWS,
    RunNotFound,
    open_runs,
    read_manifest,
    read_progress,
    read_spec_text,
)
from tests.support.runs import MATCH_SETTING_TEXT, config_hash, fixture_rows, make_fixture_run
from sweep.schema import SCHEMAS, partition_dir, to_table


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def partial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_run(tmp_path_factory.mktemp("partial"), complete=False)


def test_every_view_has_the_schema_columns_and_all_rows(run: Path) -> None:
    con = open_runs([run])
    rows = fixture_rows()
    for table in VIEWS:
        cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        assert cols[: len(SCHEMAS[table].names)] == SCHEMAS[table].names
        assert con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == len(rows[table])


def test_values_round_trip(run: Path) -> None:
    con = open_runs([run])
    got = con.execute(
        "SELECT model, config_hash, pair_id, psnr, success, loss_trajectory FROM match "
        "WHERE status = 'ok' ORDER BY model, config_hash, pair_id"
    ).fetchall()
    want = sorted(
        (r["model"], r["config_hash"], r["pair_id"], r["psnr"], r["success"], r["loss_trajectory"])
        for r in fixture_rows()["match"] if r["status"] == "ok"
    )
    assert [g[:5] for g in got] == [w[:5] for w in want]
    assert [pytest.approx(g[5]) for g in got] == [w[5] for w in want]


def test_run_still_being_written(partial: Path) -> None:
    con = open_runs([partial])
    # tables without a file yet: empty views with the right columns
    for table in ("lipschitz", "units", "images"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == 0
        cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        assert cols == SCHEMAS[table].names
    assert con.execute("SELECT count(*) FROM match").fetchall()[0][0] == 14  # the .tmp is ignored
    assert con.execute("SELECT avg(sigma) FROM lipschitz").fetchall()[0][0] is None
    # a file that lands after opening is seen by the next query
    extra = [dict(r, unit_id="vit_a-match-9", pair_id="p9") for r in fixture_rows(("vit_a",))["match"][:1]]
    folder = partial / partition_dir("match", "match", "vit_a")
    pq.write_table(to_table("match", extra), folder / "vit_a-match-9.parquet")
    try:
        assert con.execute("SELECT count(*) FROM match").fetchall()[0][0] == 15
    finally:
        (folder / "vit_a-match-9.parquet").unlink()
    assert read_progress(partial)["state"] == "running"


def test_several_runs_union(tmp_path: Path, run: Path) -> None:
    other = make_fixture_run(tmp_path, models=("vit_c",), run_id="other-run")
    con = open_runs([run, other, run])  # duplicates are read once
    got = dict(con.execute("SELECT run_id, count(*) FROM match GROUP BY run_id").fetchall())
    # vit_a and vit_c (each the first model) ran match with two settings: 5 + 4 rows
    assert got == {"fixture-run": 14, "other-run": 9}


def test_model_names_with_quoted_characters(tmp_path: Path) -> None:
    model = "pkg.mod:factory/x y"
    run = make_fixture_run(tmp_path, models=(model,))
    con = open_runs([run])
    assert con.execute("SELECT DISTINCT model FROM match").fetchall() == [(model,)]


def test_missing_or_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunNotFound, match="not found"):
        open_runs([tmp_path / "nope"])
    with pytest.raises(RunNotFound, match="not a vitsweep run"):
        open_runs([tmp_path])
    assert "\n" not in str(RunNotFound("a\nb"))


def test_sandboxed_connection(run: Path) -> None:
    con = open_runs([run])
    with pytest.raises(duckdb.Error):
        con.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")
    assert con.execute("SELECT count(*) FROM units").fetchall()[0][0] == 8


def test_run_files(run: Path, tmp_path: Path) -> None:
    assert read_progress(run)["state"] == "finished"
    assert read_manifest(run)["run_id"] == "fixture-run"
    assert "models:" in read_spec_text(run)
    assert read_progress(tmp_path) is None and read_manifest(tmp_path) is None
    assert read_spec_text(tmp_path) is None
    (tmp_path / "progress.json").write_text("{half")
    assert read_progress(tmp_path) is None



def test_settings_view(run: Path, partial: Path, tmp_path: Path) -> None:
    """One row per config_hash; `setting` names what differs between a probe's settings, or
    every non-null parameter where the probe has one setting; in a run still being written the
    result rows stand in for the missing units table."""
    assert DERIVED_VIEWS == ("unit_rows", "settings")
    for path in (run, partial):
        con = open_runs([path])
        rows = con.execute("SELECT config_hash, probe, setting FROM settings").fetchall()
        assert len(rows) == len({r[0] for r in rows})
        got = {r[0]: r[2] for r in rows if r[1] == "match"}
        assert got == {config_hash("vit_a", "match", "paper"): MATCH_SETTING_TEXT["paper"],
                       config_hash("vit_a", "match"): MATCH_SETTING_TEXT["default"],
                       config_hash("vit_b", "match"): MATCH_SETTING_TEXT["default"]}
    # one match setting only: every parameter that is not null, sorted by name
    single = open_runs([make_fixture_run(tmp_path, models=("vit_a",), paper=False)])
    assert single.execute("SELECT setting FROM settings WHERE probe = 'match'").fetchall() == [
        ("lr=0.01, max_steps=1000, optimizer=adam, preset=default",)]


# ---------------------------------------------------------------- scale: limits, keys, stats

CROSS_JOIN = ("SELECT count(*) FROM lipschitz a, lipschitz b, lipschitz c, lipschitz d, "
              "lipschitz e, lipschitz f")


def test_time_limit_stops_a_runaway_query(run: Path) -> None:
    """A 6-way cross join (8·10^12 rows on this fixture) is interrupted by DuckDB; the
    connection answers the next query."""
    from analysis.db import QueryStopped, time_limit

    con = open_runs([run])
    with pytest.raises(QueryStopped, match=r"^Query stopped after 0\.5 s"), time_limit(con, 0.5) as cur:
        cur.sql(CROSS_JOIN).fetchall()
    with time_limit(con, 30) as cur:
        assert cur.sql("SELECT count(*) FROM match").fetchall() == [(len(fixture_rows()["match"]),)]


def test_time_limit_leaves_a_quick_query_and_its_errors_alone(run: Path) -> None:
    from analysis.db import time_limit

    con = open_runs([run])
    with time_limit(con, None) as cur:
        assert cur.sql("SELECT 41 + 1").fetchall() == [(42,)]
    with pytest.raises(duckdb.BinderException), time_limit(con, 5) as cur:
        cur.sql("SELECT no_such_column FROM match").fetchall()


def test_connection_limits(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection gets the same memory limit and threads, from Limits or the environment;
    the sandbox locks them."""
    from analysis.db import Limits

    con = open_runs([run], limits=Limits(memory_limit="300MB", threads=1))
    assert con.sql("SELECT current_setting('threads')").fetchall() == [(1,)]
    limit = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert limit.replace(" ", "") in ("286.1MiB", "300.0MB"), limit
    with pytest.raises(duckdb.Error):
        con.execute("SET memory_limit = '20GB'")
    monkeypatch.setenv("VITSWEEP_MEMORY_LIMIT", "200MB")
    monkeypatch.setenv("VITSWEEP_THREADS", "1")
    con = open_runs([run])
    assert con.sql("SELECT current_setting('threads')").fetchall() == [(1,)]
    assert con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0].replace(" ", "") in (
        "190.7MiB", "200.0MB")


def test_file_listing_changes_with_the_files(tmp_path: Path) -> None:
    from analysis.db import file_listing

    run = make_fixture_run(tmp_path)
    before = file_listing([run])
    expected = sorted(str(p) for p in (run / "results").rglob("*.parquet"))
    assert [name for name, _, _ in before] == expected
    assert file_listing([run]) == before  # nothing changed: same key
    folder = run / partition_dir("match", "match", "vit_c")
    folder.mkdir(parents=True)
    rows = fixture_rows(("vit_c",))["match"]
    pq.write_table(to_table("match", rows), folder / "new.parquet")
    added = file_listing([run])
    assert len(added) == len(before) + 1
    pq.write_table(to_table("match", rows[:1]), folder / "new.parquet")  # rewritten: new size
    assert file_listing([run]) != added
    (folder / ".half.x.tmp").write_bytes(b"PAR1")  # a temporary file is not a result
    assert len(file_listing([run])) == len(added)
    assert file_listing([tmp_path / "gone"]) == ()


def test_read_stats_count_units_files_and_rows(run: Path) -> None:
    from analysis.db import read_stats

    con = open_runs([run])
    stats = read_stats(con, [run])
    files = list((run / "results").rglob("*.parquet"))
    rows = {t: sum(pq.read_metadata(f).num_rows for f in (run / "results" / t).rglob("*.parquet"))
            for t in VIEWS}
    assert stats.files == len(files)
    assert stats.units == rows["units"] == len(fixture_rows()["units"])
    assert stats.rows == sum(rows.values())
    assert stats.rows_by_table == rows
    assert stats.seconds >= 0
    assert stats.text().startswith(f"read {stats.units:,} units, {len(files):,} Parquet files and "
                                   f"{stats.rows:,} rows in ")


def test_a_run_resumed_by_another_version(tmp_path: Path) -> None:
    """A run whose newest file has columns its first lacks (and the other way round) is read
    with every value of both kinds of file."""
    import os

    import pyarrow as pa

    run = make_fixture_run(tmp_path, only=("match",), paper=False)
    folder = run / partition_dir("match", "match", "vit_a")
    old = pq.read_table(folder / "vit_a-match-0.parquet")
    # the first file (by name) of an older version: no quant_rel_dist column
    pq.write_table(old.drop_columns(["quant_rel_dist"]), folder / "vit_a-match-0.parquet")
    # the newest file of a newer version: an extra column
    newer = old.append_column("extra_metric", pa.array([7.0] * old.num_rows))
    newer = newer.set_column(newer.schema.get_field_index("unit_id"), "unit_id",
                             pa.array(["vit_a-match-9"] * old.num_rows))
    pq.write_table(newer, folder / "vit_a-match-9.parquet")
    os.utime(folder / "vit_a-match-9.parquet", ns=(2**62, 2**62))
    con = open_runs([run])
    got = con.sql("SELECT unit_id, count(*), count(quant_rel_dist) FROM match WHERE model = 'vit_a' "
                  "GROUP BY unit_id ORDER BY unit_id").fetchall()
    assert got == [("vit_a-match-0", 5, 0), ("vit_a-match-9", 5, 4)]


def test_scale_fixture_views_hold_every_row(tmp_path: Path) -> None:
    """The multi-model, multi-setting scale fixture (written by RunStore) reads back whole."""
    from tests.support.runs import SCALE_MODELS, make_scale_run

    run = make_scale_run(tmp_path, pairs=60, pairs_per_unit=10)
    con = open_runs([run])
    for table in VIEWS:
        files = list((run / "results" / table).rglob("*.parquet"))
        assert con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0] == sum(
            pq.read_metadata(f).num_rows for f in files)
    assert sorted(r[0] for r in con.sql("SELECT DISTINCT model FROM match").fetchall()) == sorted(SCALE_MODELS)
    settings = con.sql("SELECT probe, count(DISTINCT setting) FROM settings GROUP BY probe ORDER BY probe").fetchall()
    assert settings == [("lipschitz", 2), ("match", 2), ("perturb", 2)]


def test_a_limit_over_the_labelled_views_is_kept(tmp_path: Path) -> None:
    """DuckDB 2.0.1 dropped an outer LIMIT when a view LEFT JOINed a filtered empty relation
    (the match and perturb views join the labels pass's rows): 14 rows came back for LIMIT 5."""
    con = open_runs([make_fixture_run(tmp_path)])
    for view in ("match", "perturb"):
        total = con.execute(f"SELECT count(*) FROM {view}").fetchone()[0]
        assert total > 5
        assert con.execute(f"SELECT count(*) FROM (SELECT * FROM {view} LIMIT 5)").fetchone()[0] == 5
        cur = con.cursor()
        assert len(cur.sql(f"SELECT * FROM {view}").limit(3).df()) == 3
        cur.close()
