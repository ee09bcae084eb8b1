"""Snapshot connections (analysis.db.open_runs(..., snapshot=True), snapshot_estimates): `units`
read once and `lipschitz_estimates` computed once give the same rows, under every filter, and the
named queries built on them the same answers as live views."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import db, named
from tests.support.runs import SCALE_MODELS, make_scale_run

# claims reads lipschitz rows itself (per-pair finite-step estimates at a stated h, issue 22)
USERS = ("lipschitz", "lipschitz_families", "lipschitz_pairs", "lipschitz_directions")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scale_run(tmp_path_factory.mktemp("scale"), pairs=120, pairs_per_unit=20)


def _estimates(con, *filters: str | None) -> list[tuple]:
    filters = filters or (None, None, None, None)
    return con.execute("SELECT * FROM lipschitz_estimates(?, ?, ?, ?) ORDER BY ALL", list(filters)).fetchall()


def test_same_rows_and_answers(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.THREADS_ENV, "1")  # avg() sums in one order: answers compared exactly
    live = db.open_runs([run], snapshot=True)
    snap = db.open_runs([run], snapshot=True)
    db.snapshot_estimates(snap)
    db.snapshot_estimates(snap)  # idempotent
    assert snap.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                        "'_lipschitz_estimates_snapshot'").fetchone() == (1,)
    config = live.execute("SELECT any_value(config_hash) FROM lipschitz WHERE model = ?",
                          [SCALE_MODELS[1]]).fetchone()[0]
    for filters in [(None, None, None, None), (None, SCALE_MODELS[0], None, None),
                    (None, None, None, config), ("no-such-run", None, None, None)]:
        rows = _estimates(live, *filters)
        assert _estimates(snap, *filters) == rows, filters
        assert rows or filters[0] == "no-such-run"
    for name in USERS:
        assert named.get_named(name).sql.count("lipschitz_estimates") >= 1
        assert named.run_named_arrow(snap, name).equals(named.run_named_arrow(live, name)), name
    # the snapshot really stands in for the files: emptying the view leaves it unchanged
    before = _estimates(snap)
    snap.execute("CREATE OR REPLACE VIEW lipschitz AS SELECT * FROM lipschitz WHERE false")
    assert _estimates(snap) == before and len(before) > 100


def test_units_read_once(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.THREADS_ENV, "1")
    live = db.open_runs([run])
    snap = db.open_runs([run], snapshot=True)
    sql = "SELECT * FROM units ORDER BY ALL"
    assert snap.execute(sql).fetchall() == live.execute(sql).fetchall()
    assert [c[:2] for c in snap.execute("DESCRIBE units").fetchall()] == \
        [c[:2] for c in live.execute("DESCRIBE units").fetchall()]
    n = live.execute("SELECT count(*) FROM units").fetchone()[0]
    assert n > 10
    for name in ("overview", "failures", "claims", "equivalence"):
        assert named.run_named_arrow(snap, name).equals(named.run_named_arrow(live, name)), name
    # read once: a unit file removed afterwards is still counted by the snapshot, not by a live view
    victim = next((run / "results" / "units").glob("*/*/*.parquet"))
    moved = victim.rename(victim.with_suffix(".moved"))
    try:
        assert snap.execute("SELECT count(*) FROM units").fetchone()[0] == n
        assert db.open_runs([run]).execute("SELECT count(*) FROM units").fetchone()[0] < n
    finally:
        moved.rename(victim)


def test_unit_rows_counts_every_result_row_once(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`unit_rows` (one row per unit, key and status with rows, and how many) equals a count made
    here with pyarrow from the files; the snapshot holds the same rows and stands in for the files;
    overview, claims, settings and the read counts use it and answer as on a live connection."""
    import pyarrow.dataset as ds

    monkeypatch.setenv(db.THREADS_ENV, "1")
    keys = ["run_id", "unit_id", "model", "weights", "embed", "probe", "config_hash", "params", "status"]
    expected: dict[tuple, int] = {}
    for table in ("match", "perturb", "lipschitz"):
        files = sorted(str(p) for p in (run / "results" / table).rglob("*.parquet"))
        df = ds.dataset(files, format="parquet").to_table(columns=keys).to_pandas()
        df["probe"] = table  # the hive partition folder probe=<table>
        for row in df.itertuples(index=False):
            key = tuple(getattr(row, k) for k in keys)
            expected[key] = expected.get(key, 0) + 1
    assert {k[-1] for k in expected} == {"ok", "error"}
    live = db.open_runs([run])
    snap = db.open_runs([run], snapshot=True)
    sql = f"SELECT {', '.join(keys)}, rows FROM unit_rows"
    got = {tuple(r[:9]): r[9] for r in live.execute(sql).fetchall()}
    assert got == expected and len(got) >= 12  # 3 probes x 2 models x 2 settings at least
    assert sorted(snap.execute(sql).fetchall()) == sorted(live.execute(sql).fetchall())
    assert "unit_rows" in db.DERIVED_VIEWS
    for name in ("overview", "claims"):
        assert "unit_rows" in named.get_named(name).sql
        assert named.run_named_arrow(snap, name).equals(named.run_named_arrow(live, name)), name
    settings = "SELECT * FROM settings ORDER BY ALL"
    assert snap.execute(settings).fetchall() == live.execute(settings).fetchall()
    snap_stats, live_stats = db.read_stats(snap, [run]), db.read_stats(live, [run])
    assert snap_stats.rows_by_table == live_stats.rows_by_table
    assert snap_stats.rows_by_table["match"] == sum(n for k, n in expected.items() if k[5] == "match")
    # the snapshot stands in for the files: emptying a result view leaves it unchanged
    before = sorted(snap.execute(sql).fetchall())
    snap.execute("CREATE OR REPLACE VIEW match AS SELECT * FROM match WHERE false")
    assert sorted(snap.execute(sql).fetchall()) == before
