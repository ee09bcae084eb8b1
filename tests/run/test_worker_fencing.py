"""No late writes: a unit attempt the driver gave up on cannot replace the files of a later attempt.

The race, reproduced deterministically: attempt 1 of a unit starts in its own process (as an
actor runs it) and is held at its first forward; meanwhile the driver has re-queued the unit,
attempt 2 runs and is committed; then attempt 1 is let go and finishes. Before fencing, attempt 1
then overwrote every file of the unit (its `units` row said attempts=1, worker=attempt-1).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq

from sweep.run.spec import load_spec
from sweep.run.store import RunStore
from sweep.run.worker import EncoderCache, run_unit
from tests.support.sweeps import PYTHON, REPO, make_shards, ray_env, read_table, write_spec

GATED = "tests.support.encoders:gated_linear_encoder"
PROBES = [{"name": "match", "params": {"max_steps": 10, "log_every": 5}}]

ATTEMPT_1 = """
import json, sys
from sweep.run.spec import load_spec
from sweep.run.worker import EncoderCache, run_unit
(unit,) = load_spec(sys.argv[1]).units
summary = run_unit(unit, EncoderCache("cpu"), sys.argv[2], run_id="run-1", attempt=1, worker="attempt-1", commit=False)
print(json.dumps(summary.staged))
"""


def _units_row(run: Path) -> dict:
    (row,) = read_table(run, "units").to_pylist()
    return row


def test_late_attempt_cannot_replace_the_current_one(tmp_path: Path) -> None:
    make_shards(tmp_path / "shards", 1, 3)
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run,
                      models=[{"name": GATED, "weights": "factory"}], probes=PROBES)
    (unit,) = load_spec(spec).units
    gate = tmp_path / "gate"
    env = {**ray_env(), "VITSWEEP_TEST_GATE": str(gate)}
    late = subprocess.Popen([PYTHON, "-c", ATTEMPT_1, str(spec), str(run)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not Path(str(gate) + ".started").exists():  # attempt 1 is inside its first forward
            assert late.poll() is None, late.communicate()
            assert time.monotonic() < deadline, "attempt 1 never started"
            time.sleep(0.05)

        # The driver gave up on attempt 1; attempt 2 runs (no gate in this process) and is committed.
        store = RunStore(run)
        current = run_unit(unit, EncoderCache("cpu"), store, run_id="run-1", attempt=2, worker="attempt-2", commit=False)
        store.commit_staged(current.staged)
        assert _units_row(run)["attempts"] == 2
        committed = {p: p.read_bytes() for p in run.rglob("*.parquet")}
        assert {p.parent.parent.parent.name for p in committed} == {"match", "pairs", "units", "images", "embeddings"}

        gate.touch()  # attempt 1 goes on and finishes late
        out, err = late.communicate(timeout=120)
        assert late.returncode == 0, err
    finally:
        gate.touch()
        late.kill()
        late.wait()

    # attempt 1 wrote only its own staged files; the committed files are attempt 2's, byte for byte
    staged_late = json.loads(out.strip().splitlines()[-1])
    assert staged_late and all(".a1." in tmp for tmp, _ in staged_late)
    assert {p: p.read_bytes() for p in run.rglob("*.parquet")} == committed
    row = _units_row(run)
    assert (row["attempts"], row["worker"]) == (2, "attempt-2")
    assert read_table(run, "match").num_rows == 3 and set(read_table(run, "match").column("unit_id").to_pylist()) == {unit.unit_id}
    # the late files are temporary files that no reader globbing *.parquet sees; clean_tmp removes them
    assert all((run / tmp).exists() for tmp, _ in staged_late)
    assert RunStore(run).clean_tmp() == len(staged_late)
    assert not list(run.rglob("*.tmp"))


def test_commit_moves_staged_files_in_order(tmp_path: Path) -> None:
    """A staged attempt is invisible until committed; committing puts every table in place, units last."""
    make_shards(tmp_path / "shards", 1, 2)
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run, probes=PROBES)
    (unit,) = load_spec(spec).units
    store = RunStore(run)
    summary = run_unit(unit, EncoderCache("cpu"), store, run_id="run-1", attempt=3, commit=False)
    assert not list(run.rglob("*.parquet")) and store.done_unit_ids() == set()
    assert summary.staged[-1][1].startswith("results/units/")
    store.commit_staged(summary.staged)
    assert store.done_unit_ids() == {unit.unit_id}
    assert pq.read_table(run / summary.staged[0][1]).num_rows == 2
    assert not list(run.rglob("*.tmp"))


def test_driver_commits_only_the_current_attempt(tmp_path: Path) -> None:
    """The driver's rule (Sweep._commit): a result of an attempt that is no longer current is
    discarded (its staged files deleted, nothing committed, not counted as done); the current
    attempt's result is committed and counted."""
    from sweep.run.distribute import Sweep

    make_shards(tmp_path / "shards", 1, 2)
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run, probes=PROBES)
    (unit,) = load_spec(spec).units
    store = RunStore(run)
    done: list[str] = []
    sweep = Sweep([unit], run_root=str(run), run_id="run-1", actors=1, use_gpu=False,
                  on_done=lambda s: done.append(s.worker))
    late = run_unit(unit, EncoderCache("cpu"), store, run_id="run-1", attempt=1, worker="attempt-1", commit=False)
    current = run_unit(unit, EncoderCache("cpu"), store, run_id="run-1", attempt=2, worker="attempt-2", commit=False)
    sweep.current[unit.unit_id] = 2  # attempt 1 was given up on and the unit re-queued
    sweep._commit(unit, 1, late)
    assert done == [] and not list(run.rglob("*.parquet"))
    assert not any((run / tmp).exists() for tmp, _ in late.staged)
    sweep._commit(unit, 2, current)
    assert done == ["attempt-2"] and _units_row(run)["attempts"] == 2
    assert not list(run.rglob("*.tmp"))
