"""Replay without Ray: the comparison rule, a run made by run_unit replayed to the bit, the
altered-value report, and the replay command on the dashboard's Pairs page."""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from streamlit.testing.v1 import AppTest

from sweep.run.manifest import prepare_run
from sweep.finished.replay import compare_values, replay_pair
from sweep.run.spec import load_spec
from sweep.run.store import RunStore
from sweep.run.worker import EncoderCache, run_unit
from tests.support.sweeps import make_shards, read_table, write_spec

from tests.support.runs import make_fixture_run


@pytest.mark.parametrize(
    ("stored", "replayed", "rtol", "atol", "expected"),
    [
        (1.0, 1.0, 0, 0, None),
        (float("nan"), float("nan"), 0, 0, None),
        (1.0, math.nextafter(1.0, 2.0), 0, 0, (2.220446049250313e-16, 2.220446049250313e-16)),
        (1.0, 1.001, 1e-2, 0, None),
        (1.0, 1.001, 0, 1e-2, None),
        (1.0, 1.1, 1e-2, 1e-2, (pytest.approx(0.1), pytest.approx(0.1))),
        (2.0, float("nan"), 1, 1, (math.inf, math.inf)),
        (None, 1.0, 1, 1, (None, None)),
        (3, 5, 1, 1, (2.0, None)),  # integers are exact whatever the tolerance
        (True, False, 1, 1, (None, None)),
        ("linf", "l2", 0, 0, (None, None)),
        ([1.0, 2.0], [1.0, 2.0], 0, 0, None),
        ([1.0, 2.0], [1.0, 2.5], 0, 0, (0.5, 0.25)),
        ([1.0], [1.0, 2.0], 0, 0, (None, None)),
    ],
)
def test_compare_values(stored, replayed, rtol, atol, expected) -> None:
    assert compare_values(stored, replayed, rtol, atol) == expected


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run made by run_unit in this process on one torch thread (as a CPU actor runs)."""
    tmp = tmp_path_factory.mktemp("replay-local")
    make_shards(tmp / "shards", 1, 5, corrupt={1})
    spec = write_spec(tmp / "spec.yaml", str(tmp / "shards"), tmp / "run", batch_size=3)
    loaded = load_spec(spec)
    prepare_run(RunStore(tmp / "run"), loaded)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for unit in loaded.units:
            run_unit(unit, EncoderCache("cpu"), str(tmp / "run"), run_id="run-1")
    finally:
        torch.set_num_threads(threads)
    return tmp / "run"


def test_replay_is_bitwise_only_with_the_batch_neighbours(local_run: Path) -> None:
    together = replay_pair(str(local_run), "pair-000003")
    assert together.agrees and {u.probe for u in together.units} == {"match", "perturb", "lipschitz"}
    # alone the pair is equal up to rounding (the default tolerance then is rtol 1e-4) ...
    alone = replay_pair(str(local_run), "pair-000003", alone=True)
    assert alone.agrees and all(u.rtol == 1e-4 for u in alone.units)
    # ... but not to the bit: a batched product rounds a row differently from a product of one row
    bitwise = replay_pair(str(local_run), "pair-000003", alone=True, rtol=0, atol=0)
    assert not bitwise.agrees
    assert max(d.abs_diff for u in bitwise.units for d in u.differences if d.abs_diff is not None) < 1e-5


def test_undecodable_pair_replays_its_error_row(local_run: Path) -> None:
    report = replay_pair(str(local_run), "pair-000001", probe="match")
    (unit,) = report.units
    assert report.agrees and unit.rows_stored == 1 and "error" in unit.compared and "cos" in unit.not_replayed
    assert unit.result is None


def test_altered_lipschitz_value_is_reported(local_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(local_run, run)
    (path,) = (run / "results" / "lipschitz").rglob("*.parquet")
    table = pq.read_table(path)
    sigma = table.column("sigma").to_pylist()
    row = next(i for i, v in enumerate(sigma) if v is not None)
    pair = table.column("pair_id")[row].as_py()
    first_of_pair = table.column("pair_id").to_pylist().index(pair)
    sigma[row] = sigma[row] + 0.5
    index = table.schema.get_field_index("sigma")
    pq.write_table(table.set_column(index, table.schema.field(index), pa.array(sigma, pa.float64())), path)
    report = replay_pair(str(run), pair, probe="lipschitz")
    (unit,) = report.units
    assert not report.agrees
    (diff,) = unit.differences
    assert (diff.row, diff.column, diff.stored) == (row - first_of_pair, "sigma", sigma[row])
    assert diff.abs_diff == pytest.approx(0.5)


def test_pairs_page_shows_the_replay_command(tmp_path: Path, open_app: Callable[..., AppTest]) -> None:
    run = make_fixture_run(tmp_path)
    at = open_app(run, page="pairs")
    assert not at.exception, [e.value for e in at.exception]
    commands = [c.value for c in at.code if c.value.startswith("vitsweep replay")]
    assert len(commands) == 1
    words = shlex.split(commands[0])
    pair = words[words.index("--pair") + 1]
    config = words[words.index("--config") + 1]
    assert words[:3] == ["vitsweep", "replay", str(run)] and words[words.index("--probe") + 1] == "match"
    rows = [r for r in read_table(run, "match").to_pylist() if r["pair_id"] == pair and r["config_hash"] == config]
    assert rows  # the command names a pair and setting that the run holds
