"""Replay covers the geometry rows: the `equivalence` table's row and, where the Jacobian was
built (lipschitz family `null`), the pair's `spectrum` row; an altered singular value is reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sweep.finished.replay import replay_pair
from sweep.run.manifest import prepare_run
from sweep.run.spec import load_spec
from sweep.run.store import RunStore
from sweep.run.worker import EncoderCache, run_unit
from tests.support.sweeps import make_shards, write_spec

PROBES = [
    {"name": "lipschitz", "params": {"families": ["null"], "h": [1.0], "n_null": 2}},
    {"name": "equivalence", "params": {"match": {"max_steps": 60}, "path_points": 5, "walk_steps": 3, "walk_k": 4,
                                       "walk_iters": 2, "walk_step": 0.01}},
]


@pytest.fixture(scope="module")
def geometry_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("replay-geometry")
    make_shards(tmp / "shards", 1, 3)
    loaded = load_spec(write_spec(tmp / "spec.yaml", str(tmp / "shards"), tmp / "run", probes=PROBES, batch_size=2))
    prepare_run(RunStore(tmp / "run"), loaded)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for unit in loaded.units:
            run_unit(unit, EncoderCache("cpu"), str(tmp / "run"), run_id="run-g")
    finally:
        torch.set_num_threads(threads)
    return tmp / "run"


def test_equivalence_and_spectrum_replay_to_the_bit(geometry_run: Path) -> None:
    report = replay_pair(str(geometry_run), "pair-000001")
    assert report.agrees, [(u.probe, u.differences) for u in report.units]
    by_probe = {u.probe: u for u in report.units}
    assert set(by_probe) == {"lipschitz", "equivalence"}
    assert "spectrum.singular_values" in by_probe["lipschitz"].compared
    assert {"walk_radius", "walk_curve", "pair_dist"} <= set(by_probe["equivalence"].compared)


def test_an_altered_singular_value_is_reported(geometry_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(geometry_run, run)
    (path,) = list((run / "results" / "spectrum").rglob("*.parquet"))
    table = pq.read_table(path)
    rows = table.to_pylist()
    for row in rows:
        if row["pair_id"] == "pair-000001":
            row["singular_values"] = [v * 1.01 for v in row["singular_values"]]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    report = replay_pair(str(run), "pair-000001", probe="lipschitz")
    assert not report.agrees
    assert [d.column for u in report.units for d in u.differences] == ["spectrum.singular_values"]
