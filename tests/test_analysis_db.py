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
from runfixture import MATCH_SETTING_TEXT, config_hash, fixture_rows, make_fixture_run
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
    assert DERIVED_VIEWS == ("settings",)
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
