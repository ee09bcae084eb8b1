"""`vitsweep plan` predicts exactly the units and pairs a real run then makes (local Ray, real
shards: a folder of tars without a manifest and a shard set with one), `vitsweep run` prints the
plan's line first and leaves plan.json, and a second plan learns the expected steps from the run.
The run is a subprocess, as a user runs it; the two plans go through the same CLI entry point in
this process (tests/support/cli_inproc.py: `vitsweep plan` as a subprocess is tested in tests/commands/test_plan.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support.cli_inproc import run_cli
from tests.support.sweeps import LINEAR, REPO, kill_ray_processes, ray_env, read_table, write_shard

from sweep.data.build import make_demo_shards

pytestmark = pytest.mark.slow

PROBES = [
    {"name": "match", "params": {"max_steps": [4, 8], "log_every": 2, "optimizer": "sign", "lr": 0.05, "rho": 0.3, "min_cos": 0.9}},
    {"name": "perturb", "params": {"eps": [0.01], "steps": 2, "random_draws": 1}},
    {"name": "lipschitz", "params": {"families": ["random"], "h": [0.1], "n_random": 1}},
]


def vitsweep(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweep.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_plan_predicts_the_run(tmp_path: Path) -> None:
    raw = tmp_path / "raw"  # tars only: the plan reads their headers
    for i, n in enumerate((4, 2, 5)):
        write_shard(raw / f"shard-{i:06d}.tar", n, start=10 * i)
    demo = make_demo_shards(tmp_path / "demo", pairs=5, shard_size=3)  # with manifest.json: 3 + 2 pairs
    run = tmp_path / "run"
    spec = {"name": "plan", "models": [{"name": LINEAR, "weights": "factory"}], "probes": PROBES,
            "shards": [str(raw), str(demo)], "batch_size": 4, "seed": 0, "output": str(run)}
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    env = ray_env()
    try:
        before = run_cli("plan", str(tmp_path / "spec.yaml"), "--json", cwd=REPO, env=env)
        assert before.returncode == 0, before.stderr
        plan = json.loads(before.stdout)
        assert (plan["units"], plan["pairs"], plan["unit_pairs"], plan["units_done"]) == (4 * 5, 16, 4 * 16, 0)

        ran = vitsweep(env, "run", str(tmp_path / "spec.yaml"), "--actors", "2", "--no-progress")
        assert ran.returncode == 0, ran.stderr[-3000:]
        lines = [line for line in ran.stdout.splitlines() if line.strip()]
        assert lines[0].startswith("plan: 20 units (0 done), 16 pairs"), lines
        assert (run / "plan.json").is_file() and json.loads((run / "plan.json").read_text())["unit_pairs"] == 64
    finally:
        kill_ray_processes(env["RAY_TMPDIR"])
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)

    units = read_table(run, "units").to_pylist()
    assert len(units) == plan["units"] and all(u["status"] == "ok" for u in units)
    assert sum(u["n_pairs"] for u in units) == plan["unit_pairs"]
    assert len({p["pair_id"] for p in read_table(run, "pairs").to_pylist()}) == plan["pairs"]

    # A second plan sees the finished units and the steps the match pairs took.
    after = json.loads(run_cli("plan", str(tmp_path / "spec.yaml"), "--json", cwd=REPO, env=env).stdout)
    assert after["units_done"] == 20
    seen: dict[str, list[int]] = defaultdict(list)
    for row in read_table(run, "match").to_pylist():
        seen[row["config_hash"]].append(row["steps"] + int(row["success"]))
    match_rows = [r for r in after["rows"] if r["probe"] == "match"]
    assert len(match_rows) == 2
    for r in match_rows:
        computed = seen[r["config_hash"]]
        assert r["expected_from"] == len(computed) == 16
        assert r["per_pair_expected"]["backward"] == pytest.approx(min(sum(computed) / 16, r["per_pair"]["backward"]))
    assert after["image_passes_expected"] <= after["image_passes"] == plan["image_passes"]
