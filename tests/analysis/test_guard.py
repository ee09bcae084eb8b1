"""analysis.guard: untrusted SQL runs read-only over the run's views; escapes are refused."""

from __future__ import annotations


import pytest

from analysis.db import open_runs
from analysis.guard import QueryRefused, run_readonly
from tests.support.runs import make_fixture_run
from analysis.db import KNN_EXTRA_COLUMNS
from sweep.schema import SCHEMAS


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory):
    return open_runs([make_fixture_run(tmp_path_factory.mktemp("runs"))])


ALLOWED = [
    ("SELECT model, count(*) AS n FROM match GROUP BY model ORDER BY model", 2),
    ("FROM perturb WHERE norm = 'linf'", 24),
    ("WITH ok AS (SELECT * FROM match WHERE status = 'ok') SELECT * FROM ok", 12),
    ("SELECT * FROM match WHERE pair_id IN (SELECT pair_id FROM pairs WHERE status = 'error')", 2),
    ("select 1 -- ; drop view match", 1),
    ("SELECT 1;", 1),
    ("DESCRIBE match", None),
    ("SUMMARIZE lipschitz", None),
    ("SHOW TABLES", None),
    ("SELECT * FROM memory.main.units", 8),
    ("SELECT m.model, s.setting, count(*) FROM match AS m JOIN settings AS s USING (config_hash) "
     "GROUP BY ALL", 3),
    ("SELECT probe, sum(rows) FROM unit_rows GROUP BY probe", 3),  # a derived view
    ("SELECT * FROM match_ok(NULL, NULL, NULL, NULL)", 12),  # the run's table macros
    ("SELECT * FROM match_rows(NULL, 'vit_a', NULL, NULL)", 9),
    ("SELECT count(*) FROM memory.main.lipschitz_estimates(NULL, NULL, NULL, NULL)", 1),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r", 3),
]

REFUSED = [
    # a CTE defined inside a subquery must not cover a system view of the same name outside it
    "SELECT sql FROM (WITH duckdb_views AS (SELECT 1) SELECT 1) t, duckdb_views WHERE NOT internal",
    "SELECT * FROM (WITH sqlite_master AS (SELECT 1) SELECT 1) t, sqlite_master",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM read_json('/etc/passwd')",
    "SELECT * FROM read_parquet('/etc/passwd')",
    "SELECT * FROM parquet_scan('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM query_table('match')",
    "SELECT * FROM query('SELECT 1')",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM match_ok(NULL, (SELECT content FROM read_text('/etc/passwd')), NULL, NULL)",
    "SELECT * FROM match_ok(getenv('HOME'), NULL, NULL, NULL)",
    "SELECT * FROM system.main.match_ok(NULL, NULL, NULL, NULL)",
    "SELECT * FROM temp.main.perturb_ok(NULL, NULL, NULL, NULL)",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM \"/etc/passwd\"",
    "WITH \"/etc/passwd\" AS (SELECT 1) SELECT * FROM '/etc/passwd'",
    "DESCRIBE '/etc/passwd'",
    "SUMMARIZE SELECT * FROM read_csv('/etc/passwd')",
    "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x",
    "SELECT * FROM match WHERE pair_id IN (SELECT column0 FROM read_csv('/etc/passwd'))",
    "SELECT * FROM match m, LATERAL (SELECT * FROM read_blob('/etc/passwd'))",
    "SELECT (SELECT count(*) FROM read_text('/etc/passwd'))",
    "SELECT * FROM match UNION ALL SELECT * FROM read_parquet('/x/*.parquet')",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM _empty_match",
    "SELECT * FROM temp.main.match",
    "SELECT getenv('HOME')",
    "SELECT current_setting('allowed_directories')",
    "COPY match TO '/tmp/out.csv'",
    "COPY (SELECT 1) TO '/tmp/out.csv'",
    "EXPORT DATABASE '/tmp/exported'",
    "IMPORT DATABASE '/tmp/exported'",
    "ATTACH '/tmp/x.db' AS x",
    "DETACH memory",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "RESET threads",
    "PRAGMA version",
    "CALL pragma_version()",
    "CREATE TABLE t AS SELECT 1",
    "CREATE OR REPLACE VIEW match AS SELECT 1",
    "DROP VIEW match",
    "ALTER VIEW match RENAME TO m2",
    "INSERT INTO match (run_id) VALUES ('x')",
    "UPDATE match SET psnr = 0",
    "DELETE FROM match",
    "/* comment */ DROP VIEW match",
    "SELECT 1; DROP VIEW match",
    "SELECT 1; SELECT 2",
    "BEGIN TRANSACTION",
    "USE system",
    "",
    "   ",
]


@pytest.mark.parametrize(("sql", "rows"), ALLOWED)
def test_allowed(con, sql: str, rows: int | None) -> None:
    df = run_readonly(con, sql)
    if rows is not None:
        assert len(df) == rows


@pytest.mark.parametrize("sql", REFUSED)
def test_refused_and_connection_keeps_working(con, sql: str) -> None:
    with pytest.raises(QueryRefused) as info:
        run_readonly(con, sql)
    assert "\n" not in str(info.value) and str(info.value)
    assert run_readonly(con, "SELECT count(*) AS n FROM match")["n"].iloc[0] == 14
    assert con.execute("SELECT count(*) FROM units").fetchall()[0][0] == 8


def test_limit(con) -> None:
    assert len(run_readonly(con, "SELECT * FROM lipschitz", limit=5)) == 5
    # every lipschitz row of the fixture, counted by DuckDB directly (outside the guard)
    assert len(run_readonly(con, "SELECT * FROM lipschitz", limit=None)) == \
        con.execute("SELECT count(*) FROM lipschitz").fetchone()[0]


def test_bad_sql_is_an_error_not_a_crash(con) -> None:
    import duckdb

    with pytest.raises((QueryRefused, duckdb.Error)):
        run_readonly(con, "SELEC nonsense")
    with pytest.raises(duckdb.Error):
        run_readonly(con, "SELECT no_such_column FROM match")
    assert run_readonly(con, "SELECT 1 AS one")["one"].iloc[0] == 1


def test_sandbox_even_without_the_parser_check(con) -> None:
    """Defense in depth: the connection itself cannot read outside the run or be reconfigured."""
    import duckdb

    with pytest.raises(duckdb.Error):
        con.execute("SELECT * FROM read_text('/etc/passwd')").fetchall()
    with pytest.raises(duckdb.Error):
        con.execute("SET lock_configuration = false")


VIEW_LIST = ("equivalence, images, lipschitz, match, pairs, perturb, settings, spectrum, transfer, unit_rows, "
             "units")
MACRO_LIST = ("equivalence_ok, equivalence_rows, lipschitz_estimates, lipschitz_ok, lipschitz_rows, match_ok, "
              "match_rows, perturb_ok, perturb_rows")
REFUSAL_MESSAGES = [
    ("", "empty query"),
    ("  \n ", "empty query"),
    ("SELECT 1; SELECT 2", "exactly one statement is allowed, got 2"),
    ("COPY match TO '/tmp/x.csv'", "only SELECT queries are allowed, not COPY"),
    ("SELECT * FROM read_csv('/x')",
     f"table functions are not allowed (found read_csv) except the macros {MACRO_LIST}; query the views: {VIEW_LIST}"),
    ("SELECT * FROM system.main.match_ok(NULL, NULL, NULL, NULL)",
     f"table functions are not allowed (found match_ok) except the macros {MACRO_LIST}; query the views: {VIEW_LIST}"),
    ("SELECT * FROM information_schema.tables", "only the run's views may be queried, not information_schema.tables"),
    ("SELECT * FROM temp.main.match", "only the run's views may be queried, not temp.match"),
    ("SELECT * FROM _empty_match", f"unknown table '_empty_match': query the views {VIEW_LIST}"),
    ("SELECT getenv('HOME')", "function getenv is not allowed in the SQL console"),
    ("SELECT upper(current_setting('threads'))", "function current_setting is not allowed in the SQL console"),
    ('WITH "/x" AS (SELECT 1) SELECT 1', "CTE names must be plain identifiers, not '/x'"),
    ('WITH ok AS (SELECT 1), "Bad Name" AS (SELECT 2) SELECT 1', "CTE names must be plain identifiers, not 'bad name'"),
    # SHOW <name> is a SHOW_REF with the name in it (no BASE_TABLE node): checked on its own
    ("SHOW duckdb_settings", "only the run's views may be described, not duckdb_settings"),
    ("SHOW ALL TABLES", "only the run's views may be described, not __show_tables_expanded"),
    ("SHOW DATABASES", "only the run's views may be described, not \"databases\""),
    # a macro name under another schema is not the run's macro
    ("SELECT * FROM pg_catalog.match_ok(NULL, NULL, NULL, NULL)",
     f"table functions are not allowed (found match_ok) except the macros {MACRO_LIST}; query the views: {VIEW_LIST}"),
]


@pytest.mark.parametrize(("sql", "message"), REFUSAL_MESSAGES)
def test_refusal_messages_name_the_reason(con, sql: str, message: str) -> None:
    with pytest.raises(QueryRefused) as info:
        run_readonly(con, sql)
    assert str(info.value) == message


def test_syntax_error_is_one_refused_line(con) -> None:
    with pytest.raises(QueryRefused, match=r"^syntax error: .*SELEC") as info:
        run_readonly(con, "SELEC x\nFROM match")
    assert "\n" not in str(info.value)
    assert str(QueryRefused("a\n  b\tc")) == "a b c"


@pytest.mark.parametrize(("sql", "rows"), [
    ("WITH OK AS (SELECT 1 AS a) SELECT * FROM ok", 1),  # names compare case-insensitively
    ("SELECT count(*) AS n FROM MATCH", 1),
    ("SELECT * FROM Settings", 7),
    ("SELECT * FROM Match_OK(NULL, 'vit_b', NULL, NULL)", 4),
    ("WITH a AS (SELECT 1 AS x), b AS (SELECT x FROM a) SELECT * FROM b", 1),
    ("SELECT * FROM (WITH inner_cte AS (SELECT pair_id FROM match) SELECT * FROM inner_cte) t", 14),
    # the columns of a view: the schema's, plus the labels pass's name, k and bank columns
    ("SHOW Match", len(SCHEMAS["match"]) + len(KNN_EXTRA_COLUMNS)),
    ("DESCRIBE tables", -1),  # -1: as many as DuckDB's own SHOW TABLES lists on this connection
])
def test_allowed_spellings(con, sql: str, rows: int) -> None:
    if rows == -1:
        rows = len(con.execute("SHOW TABLES").fetchall())
    assert len(run_readonly(con, sql, limit=None)) == rows


def test_a_cte_name_does_not_leak_out_of_its_subquery(con) -> None:
    with pytest.raises(QueryRefused, match="unknown table 'inner_cte'"):
        run_readonly(con, "SELECT * FROM (WITH inner_cte AS (SELECT 1) SELECT * FROM inner_cte) t, inner_cte")


def test_check_query_with_a_narrower_allow_list(con) -> None:
    from analysis.guard import check_query

    check_query(con, "SELECT * FROM match", allowed={"match"}, macros=set())
    with pytest.raises(QueryRefused, match="unknown table 'units': query the views match"):
        check_query(con, "SELECT * FROM units", allowed={"match"}, macros=set())
    with pytest.raises(QueryRefused, match=r"found match_ok\) except the macros ; query the views: match"):
        check_query(con, "SELECT * FROM match_ok(NULL, NULL, NULL, NULL)", allowed={"match"}, macros=set())
    check_query(con, "SELECT * FROM MATCH_ok(NULL, NULL, NULL, NULL)", allowed={"Match"}, macros={"Match_OK"})


def test_default_limit_is_ten_thousand_rows(con) -> None:
    assert len(run_readonly(con, "SELECT 1 AS one FROM match a, match b, match c, match d")) == 10_000  # of 14^4
