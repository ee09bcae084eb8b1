"""`vitsweep query` end to end, via a subprocess of the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.runs import MATCH_SETTING_TEXT, config_hash, make_fixture_run
from sweep.cli import main

ROOT = Path(__file__).resolve().parents[2]


def vitsweep(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweep.cli", "query", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_run(tmp_path_factory.mktemp("runs"))


def test_sql_as_csv(run: Path) -> None:
    out = vitsweep(run, "SELECT model, count(*) AS n FROM match WHERE status = 'ok' "
                        "GROUP BY model ORDER BY model", "--format", "csv")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["model,n", "vit_a,8", "vit_b,4"]


def test_named_with_param_as_json(run: Path) -> None:
    out = vitsweep(run, "--named", "equivalence", "--param", "model=vit_b", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["model"] for r in rows] == ["vit_b"]
    assert rows[0]["success_rate"] == pytest.approx(0.75)


def test_named_per_setting(run: Path) -> None:
    """vit_a ran match with two settings: two rows, never one pooled one; config_hash filters."""
    out = vitsweep(run, "--named", "equivalence", "--param", "model=vit_a", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["setting"] for r in rows] == [MATCH_SETTING_TEXT["default"], MATCH_SETTING_TEXT["paper"]]
    assert [r["success_rate"] for r in rows] == pytest.approx([0.75, 0.5])
    paper = config_hash("vit_a", "match", "paper")
    out = vitsweep(run, "--named", "equivalence", "--param", f"config_hash={paper}", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["config_hash"], r["success_rate"]) for r in rows] == [(paper, 0.5)]


def test_table_format_and_parquet_output(run: Path, tmp_path: Path) -> None:
    out = vitsweep(run, "--named", "gallery", "--param", "limit=1")
    assert out.returncode == 0, out.stderr
    assert "<png," in out.stdout and "(3 rows)" in out.stdout  # one per model and setting
    target = tmp_path / "gallery.parquet"
    out = vitsweep(run, "--named", "gallery", "--format", "parquet", "--output", target)
    assert out.returncode == 0, out.stderr
    table = pq.read_table(target)
    assert table.num_rows == 5 and table.column("src_png")[0].as_py().startswith(b"\x89PNG")


def test_list() -> None:
    out = vitsweep("--list")
    assert out.returncode == 0, out.stderr
    for name in ("equivalence", "invisibility", "overgeneralisation", "normal_space", "lipschitz"):
        assert name in out.stdout
    assert "--param model=NULL" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("{run}", "SELEC 1"), "syntax error"),
        (("{run}", "SELECT no_such FROM match"), "no_such"),
        (("{run}", "DROP VIEW match"), "read-only"),
        (("{run}", "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{run}/results/x.parquet' (FORMAT parquet)"), "EXPLAIN ANALYZE"),
        (("{run}", "EXPLAIN COPY (SELECT 1 AS x) TO '{run}/results/x.parquet' (FORMAT parquet)"), "only EXPLAIN of a SELECT"),
        (("{run}", "SELECT * FROM read_csv('/etc/passwd')"), "disabled"),
        (("{run}", "--named", "nope"), "unknown named query"),
        (("{run}", "--named", "equivalence", "--param", "colour=red"), "no parameter"),
        (("{run}", "--named", "overview", "--format", "parquet"), "--output"),
        (("/no/such/run", "SELECT 1"), "not found"),
    ],
)
def test_errors_are_one_line_exit_2(run: Path, args: tuple[str, ...], message: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's own entry point in-process (the subprocess path is covered below)."""
    rc = main(["query", *[a.format(run=run) for a in args]])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message.lower() in lines[0].lower()
    assert not (run / "results" / "x.parquet").exists()


def test_bad_query_in_a_subprocess(run: Path) -> None:
    out = vitsweep(run, "SELECT * FROM no_such_table")
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_table" in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_query_does_not_import_torch(run: Path) -> None:
    code = (
        "import sys; from sweep.cli import main; "
        f"rc = main(['query', {str(run)!r}, '--named', 'overview', '--format', 'csv']); "
        "bad = [m for m in ('torch', 'ray', 'timm') if m in sys.modules]; "
        "print('IMPORTED', bad, file=sys.stderr); sys.exit(rc or (3 if bad else 0))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stderr


CROSS_JOIN = ("SELECT count(*) FROM lipschitz a, lipschitz b, lipschitz c, lipschitz d, "
              "lipschitz e, lipschitz f")


def test_timeout_stops_a_runaway_query(run: Path) -> None:
    """A 6-way cross join is stopped by DuckDB's interrupt: one line, exit status 2, no output."""
    out = vitsweep(run, CROSS_JOIN, "--timeout", "1")
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Query stopped after 1 s" in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_timeout_applies_to_named_queries(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--timeout 0 means no limit; a generous limit leaves a named query's answer unchanged."""
    assert main(["query", str(run), "--named", "equivalence", "--format", "json", "--timeout", "0"]) == 0
    unlimited = json.loads(capsys.readouterr().out)
    assert main(["query", str(run), "--named", "equivalence", "--format", "json", "--timeout", "120",
                 "--memory-limit", "256MB"]) == 0
    assert json.loads(capsys.readouterr().out) == unlimited
    assert [r["success_rate"] for r in unlimited] == pytest.approx([0.75, 0.5, 0.75])


@pytest.mark.parametrize(("args", "message"), [
    (("--timeout", "-1"), "--timeout"),
    (("--memory-limit", "lots"), "--memory-limit"),
])
def test_bad_limits_are_one_line(run: Path, args: tuple[str, ...], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", str(run), "SELECT 1", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_memory_limit_caps_duckdb(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The limit reaches DuckDB (the same setting named queries and the dashboard use)."""
    assert main(["query", str(run), "SELECT current_setting('memory_limit') AS m", "--format", "csv",
                 "--memory-limit", "300MB"]) == 0
    value = capsys.readouterr().out.splitlines()[1].replace(" ", "")
    assert value in ("286.1MiB", "300.0MB"), value
