"""`vitsweep query --output FILE` written by DuckDB's COPY (analysis/export.py): the same bytes
(CSV) and the same table (Parquet) as the Python writer of analysis/output.py, which the reference
here is; the target file is replaced only when the query succeeded."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import db, export, named
from analysis.output import format_csv, write_result
from tests.support.runs import make_scale_run
from sweep.cli import main

CROSS_JOIN = ("SELECT count(*) FROM lipschitz a, lipschitz b, lipschitz c, lipschitz d, "
              "lipschitz e, lipschitz f")
# Texts that Python's csv module quotes or leaves alone: separators, quotes, line ends, a lone
# carriage return, leading '#' and spaces, the empty string, non-ASCII.
TRICKY = ["plain", "a,b", 'say "hi"', "two\nlines", "cr\ronly", "#hash", " padded ", "", "é ü ß",
          "tab\there", '"', ",", "NULL", "1e5", None]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scale_run(tmp_path_factory.mktemp("scale"), pairs=120, pairs_per_unit=20)


@pytest.fixture()
def one_duckdb_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """One DuckDB thread: a parallel avg() sums in a varying order (last-digit differences
    between any two runs), so only single-threaded runs can be compared byte for byte."""
    monkeypatch.setenv(db.THREADS_ENV, "1")


def _copied(sql: str, fmt: str, path: Path, params: dict | None = None,
            con: duckdb.DuckDBPyConnection | None = None) -> bool:
    path.write_bytes(b"")
    con = con or duckdb.connect()
    con.execute(f"SET allowed_paths = ['{path.as_posix()}']")
    con.execute("SET enable_external_access = false")
    return export.copy_result(con.cursor(), sql, params, fmt, path)


def test_csv_text_quoting_and_numbers_match_the_python_writer(tmp_path: Path) -> None:
    con = duckdb.connect()
    floats = [0.1, -0.0, 1e-05, 1e16, 123456789.125, 5e-324, float("nan"), float("inf"), -float("inf"), None]
    n = max(len(TRICKY), len(floats))
    source = pa.table({
        "text": pa.array((TRICKY * 2)[:n], pa.string()),
        "x": pa.array((floats * 2)[:n], pa.float64()),
        "x32": pa.array([0.1, 1.5, None, float("nan")] * (n // 4) + [0.3] * (n % 4), pa.float32()),
        "flag": pa.array([True, False, None] * (n // 3) + [True] * (n % 3), pa.bool_()),
        "i": pa.array(list(range(-3, n - 3)), pa.int64()),
        "small": pa.array([1, None] * (n // 2) + [7] * (n % 2), pa.int16()),
        'odd, "name"': pa.array(["v"] * n, pa.string()),
    }).append_column("order", pa.array(range(n), pa.int32()))
    con.register("source", source)
    con.execute("CREATE TABLE t AS SELECT * FROM source")
    sql = "SELECT * EXCLUDE (\"order\") FROM t ORDER BY \"order\""
    expected = format_csv(con.sql(sql).to_arrow_table())
    target = tmp_path / "out.csv"
    assert _copied(sql, "csv", target, con=con)
    assert target.read_bytes() == expected.encode("utf-8")
    assert expected.count('"a,b"') == 1 and '"say ""hi"""' in expected  # the reference quotes


@pytest.mark.parametrize("values", [["x", "", None, "y,z"], [None, None]])
def test_csv_single_column_empty_rows(tmp_path: Path, values: list[str | None]) -> None:
    """Python writes a row whose only field is empty as "" (else the row would vanish)."""
    con = duckdb.connect()
    con.register("source", pa.table({"v": pa.array(values, pa.string()),
                                     "k": pa.array(range(len(values)), pa.int32())}))
    con.execute("CREATE TABLE t AS SELECT * FROM source")
    sql = "SELECT v FROM t ORDER BY k"
    target = tmp_path / "one.csv"
    assert _copied(sql, "csv", target, con=con)
    assert target.read_bytes() == format_csv(con.sql(sql).to_arrow_table()).encode()
    assert target.read_text().splitlines()[1:].count('""') == sum(v in ("", None) for v in values)


def test_types_it_does_not_cover_are_left_to_python(tmp_path: Path) -> None:
    for sql in ("SELECT [1.5, 2.0] AS l", "SELECT 'ab'::BLOB AS b", "SELECT DATE '2026-01-02' AS d",
                "SELECT 1.25::DECIMAL(5, 2) AS d", "SELECT 1 AS a, 2 AS A"):
        assert not _copied(sql, "csv", tmp_path / "x.csv"), sql
        assert (tmp_path / "x.csv").read_bytes() == b""
    assert not _copied("SELECT 1 AS a", "json", tmp_path / "x.json")


def test_every_named_query_same_csv_and_parquet(run: Path, tmp_path: Path, one_duckdb_thread: None) -> None:
    """Every named query that SQL alone answers: written by COPY, byte for byte the CSV and
    value for value the Parquet that the Python writer gives for the same rows."""
    copied = []
    for query in named.list_named():
        con = db.open_runs([run])
        reference = named.run_named_arrow(con, query.name, {})
        con.close()
        for fmt in ("csv", "parquet"):
            out = tmp_path / f"{query.name}.{fmt}"
            assert main(["query", str(run), "--named", query.name, "--format", fmt, "--output", str(out)]) == 0
            ref = tmp_path / f"{query.name}.ref.{fmt}"
            write_result(reference, fmt, ref)
            if fmt == "csv":
                assert out.read_bytes() == ref.read_bytes(), query.name
            else:
                # same names, types and values; DuckDB marks a column it knows has no NULL
                # (a literal) `not null`, which the cast to the reference's schema drops
                copied_table, expected = pq.read_table(out), pq.read_table(ref)
                assert copied_table.cast(expected.schema).equals(expected), query.name
            target = tmp_path / f"probe.{fmt}"
            probe_con = db.open_runs([run], writable=[target])
            target.write_bytes(b"")
            if query.finisher is None and export.copy_result(
                    probe_con.cursor(), query.sql, named.bind_params(query, {}), fmt, target):
                copied.append(f"{query.name}.{fmt}")
            probe_con.close()
    # the row-per-pair queries really go through COPY, in both formats
    for name in ("lipschitz_directions", "lipschitz_pairs", "match_pairs", "equivalence"):
        assert {f"{name}.csv", f"{name}.parquet"} <= set(copied), copied
    assert "claims.csv" not in copied and "gallery.csv" not in copied  # a finisher; PNG bytes


def test_plain_sql_to_csv_equals_stdout(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql = ("SELECT model, pair_id, family, direction, h, l_jvp, l_fd, status, error FROM lipschitz "
           "ORDER BY model, config_hash, unit_id, pair_id, family, direction, h")
    assert main(["query", str(run), sql, "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "rows.csv"
    assert main(["query", str(run), sql, "--format", "csv", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == printed
    assert printed.count("\n") > 100


def test_limit_still_applies(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "few.csv"
    assert main(["query", str(run), "--named", "lipschitz_directions", "--limit", "3", "--format", "csv",
                 "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4


def test_a_stopped_query_leaves_the_file_as_it_was(run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "keep.csv"
    target.write_text("precious\n")
    target.chmod(0o640)
    rc = main(["query", str(run), CROSS_JOIN, "--format", "csv", "--output", str(target), "--force",
               "--timeout", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Query stopped after 1 s" in err[0], err
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv"]  # no staging file left
    # replaced on success, keeping the file's mode
    assert main(["query", str(run), "--named", "equivalence", "--format", "csv", "--output", str(target),
                 "--force"]) == 0
    assert target.read_text().startswith("model,") and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv"]


def test_a_new_file_gets_the_usual_mode(run: Path, tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        target = tmp_path / "new.parquet"
        assert main(["query", str(run), "--named", "equivalence", "--format", "parquet",
                     "--output", str(target)]) == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert pq.read_table(target).num_rows > 0


def test_a_link_is_written_through_as_before(run: Path, tmp_path: Path) -> None:
    """--output naming a symbolic link writes the file it points to (the link stays a link)."""
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert main(["query", str(run), "--named", "equivalence", "--format", "csv", "--output", str(link),
                 "--force"]) == 0
    assert link.is_symlink() and real.read_text().startswith("model,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]
