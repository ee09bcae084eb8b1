"""`vitsweep replay` against a real CPU run made on a local Ray: every stored match, perturb and
lipschitz row is reproduced to the bit; a stored value altered in its Parquet file is reported."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.cli_inproc import run_cli
from sweep.run.driver import run_sweep
from sweep.finished.replay import replay_pair
from sweep.run.spec import load_spec
from tests.support.sweeps import PYTHON, REPO, kill_ray_processes, make_shards, ray_env, read_table, write_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """2 shards of 4 pairs (pair 1 undecodable), the three probes, 2 CPU actors on a local Ray."""
    tmp = tmp_path_factory.mktemp("replay")
    env = ray_env()
    env["RAY_AUTH_MODE"] = "disabled"
    patch = pytest.MonkeyPatch()
    for key in ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED"):
        patch.setenv(key, env[key])
    make_shards(tmp / "shards", 2, 4, corrupt={1})
    spec = write_spec(tmp / "spec.yaml", str(tmp / "shards"), tmp / "run", batch_size=3)
    try:
        outcome = run_sweep(load_spec(spec), actors=2, device="cpu", show_progress=False)
        assert outcome.units_failed == 0
    finally:
        from sweep.run import distribute

        distribute.shutdown()
        kill_ray_processes(env["RAY_TMPDIR"])
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
        patch.undo()
    yield tmp / "run"


def _row_keys(table: pa.Table) -> list[tuple[str, str, int]]:
    """(unit, pair, index within the pair) of every stored row."""
    counts: dict[tuple[str, str], int] = {}
    keys = []
    for unit, pair in zip(table.column("unit_id").to_pylist(), table.column("pair_id").to_pylist()):
        i = counts.get((unit, pair), 0)
        counts[(unit, pair)] = i + 1
        keys.append((unit, pair, i))
    return keys


def test_replay_agrees_with_every_stored_row(cpu_run: Path) -> None:
    stored = {t: read_table(cpu_run, t) for t in ("match", "perturb", "lipschitz")}
    assert {t: s.num_rows for t, s in stored.items()} == {"match": 8, "perturb": 7 * 2 + 1, "lipschitz": 7 * 8 + 1}
    pairs = sorted(set(read_table(cpu_run, "pairs").column("pair_id").to_pylist()))
    assert len(pairs) == 8
    checked: dict[str, set[tuple[str, str, int]]] = {t: set() for t in stored}
    for pair in pairs:
        report = replay_pair(str(cpu_run), pair)
        assert {u.probe for u in report.units} == {"match", "perturb", "lipschitz"}
        for unit in report.units:
            assert unit.agrees, (pair, unit.probe, unit.differences[:3])
            assert (unit.rtol, unit.atol) == (0.0, 0.0) and unit.stored_device == "cpu"
            checked[unit.probe] |= {(unit.unit_id, pair, i) for i in range(unit.rows_stored)}
            if pair != "pair-000001":  # the undecodable pair has an error row only
                assert {"cos", "rel_dist", "steps", "emb_disp", "l_fd", "l_jvp", "sigma"} & set(unit.compared)
                assert unit.result is not None and unit.result.error is None
    for table, rows in stored.items():  # every stored row was compared
        assert checked[table] == set(_row_keys(rows)), table


def _alter(run: Path, table: str, column: str, row: int, change) -> tuple[str, object, object]:
    path = next(iter(sorted((run / "results" / table).rglob("*.parquet"))))
    data = pq.read_table(path)
    values = data.column(column).to_pylist()
    old = values[row]
    values[row] = change(old)
    index = data.schema.get_field_index(column)
    pq.write_table(data.set_column(index, data.schema.field(index), pa.array(values, data.schema.field(index).type)), path)
    return data.column("pair_id")[row].as_py(), old, values[row]


def test_replay_reports_an_altered_value(cpu_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(cpu_run, run)
    # one match value nudged by the smallest step a float64 takes there, one lipschitz value by 1 %
    import math

    pair_m, old_m, new_m = _alter(run, "match", "cos", 0, lambda v: math.nextafter(v, math.inf))
    pair_l, old_l, new_l = _alter(run, "lipschitz", "l_jvp", 3, lambda v: v * 1.01)

    proc = subprocess.run(
        [PYTHON, "-m", "sweep.cli", "replay", str(run), "--pair", pair_m, "--probe", "match", "--json",
         "--out", str(tmp_path / "replay")],
        cwd=REPO, env=ray_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["agrees"] is False and len(report["units"]) == 1
    (diff,) = report["units"][0]["differences"]
    assert (diff["row"], diff["column"], diff["stored"], diff["replayed"]) == (0, "cos", new_m, old_m)
    assert diff["abs_diff"] == abs(new_m - old_m) > 0
    assert {p.name for p in (tmp_path / "replay").glob("match-*/*")} == {"src.png", "tgt.png", "adv.png", "diff.png", "replay.json"}

    lip = replay_pair(str(run), pair_l, probe="lipschitz")
    (unit,) = lip.units
    assert not lip.agrees
    assert [(d.column, d.stored, d.replayed) for d in unit.differences] == [("l_jvp", new_l, old_l)]
    assert unit.differences[0].rel_diff == pytest.approx(abs(new_l - old_l) / abs(new_l))
    # a tolerance wider than the change accepts it
    assert replay_pair(str(run), pair_l, probe="lipschitz", rtol=0.02).agrees


def test_replay_cli_bad_input(cpu_run: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "sweep.cli", "replay", *args], cwd=REPO, env=ray_env(),
                              capture_output=True, text=True, timeout=300)

    def here(*args: str) -> subprocess.CompletedProcess:
        """The same entry point in this process (tests/support/cli_inproc.py): no torch import to wait for."""
        return run_cli("replay", *args, cwd=REPO, env=ray_env())

    for args, needle, how in (
        ((str(cpu_run), "--pair", "no-such-pair"), "no pair 'no-such-pair'", cli),
        ((str(tmp_path / "missing"), "--pair", "pair-000000"), "no such run directory", here),
        ((str(cpu_run), "--pair", "pair-000000", "--probe", "nope"), "was not measured", here),
        ((str(cpu_run), "--pair", "pair-000000", "--rtol", "-1"), "--rtol must be", here),
    ):
        proc = how(*args, "--out", str(tmp_path / "o"))
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()
    ok = cli(str(cpu_run), "--pair", "pair-000002", "--out", str(tmp_path / "ok"))
    assert ok.returncode == 0 and "pair pair-000002: agrees" in ok.stdout, ok.stdout + ok.stderr
