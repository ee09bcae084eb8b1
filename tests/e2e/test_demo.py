"""`vitsweep demo` end to end, as `make demo` runs it: shards, a sweep of all three probes on a
local Ray, the DuckDB summary, and a run directory any Parquet reader can open."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_all_three_probes_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "sweep.cli", "demo", "--out", str(out), "--pairs", "2", "--no-progress"]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    for heading in ("match (equivalence)", "perturb (normal space)", "lipschitz (directional)", "dashboard"):
        assert heading in first.stdout
    for name in ("spec.yaml", "manifest.json", "progress.json"):
        assert (out / name).is_file()
    counts = dict(
        duckdb.sql(
            f"SELECT probe, count(*) FROM read_parquet('{out}/results/*/*/*/*.parquet', union_by_name=true, "
            "hive_partitioning=true) WHERE status = 'ok' GROUP BY probe"
        ).fetchall()
    )
    assert set(counts) == {"match", "perturb", "lipschitz"}
    units_before = sorted((out / "results" / "units").rglob("*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in units_before]

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    units_after = sorted((out / "results" / "units").rglob("*.parquet"))
    assert units_after == units_before and [p.stat().st_mtime_ns for p in units_after] == mtimes
