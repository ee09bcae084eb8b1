"""Real Ray clusters on this one machine: `ray start` nodes, losing a node mid-sweep,
`ray job submit` with token authentication; and cluster.yaml against Ray's own schema."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.sweeps import (
    SLOW_MATCH,
    PYTHON,
    REPO,
    SLOW,
    assert_no_duplicates,
    kill_ray_processes,
    make_shards,
    ray_env,
    read_table,
    write_spec,
)

RAY = str(REPO / ".venv" / "bin" / "ray")


def test_cluster_yaml_passes_ray_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs first
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"].get("GPU") == 0
    assert any(t["node_config"]["InstanceType"].startswith(("g5", "p4d", "p5")) for t in types.values())
    assert "~/vitsweep" in config["file_mounts"]
    bad = copy.deepcopy(config)
    bad["available_node_types"]["head.cpu"]["colour"] = "red"
    with pytest.raises(Exception, match="colour"):
        validate_config(prepare_config(bad))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(env: dict[str, str], *args: str) -> None:
    subprocess.run([RAY, "start", "--disable-usage-stats", "--object-store-memory", str(80 * 1024**2), *args],
                   env=env, cwd=REPO, check=True, capture_output=True, timeout=180)


@pytest.fixture()
def cluster_env() -> Iterator[dict[str, str]]:
    env = ray_env()
    yield env
    kill_ray_processes(env["RAY_TMPDIR"])
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def _raylet_pid(node_manager_port: int) -> int:
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"/raylet") and f"--node_manager_port={node_manager_port}".encode() in cmdline:
            return int(entry.name)
    raise LookupError(f"no raylet with node manager port {node_manager_port}")


def _cmdline(pid: int | str) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return [b""]


def _parent(pid: int | str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _busy_actor_raylet(raylets: dict[int, int]) -> int | None:
    """The raylet (of `raylets`: pid -> node manager port) whose node runs an actor that is inside
    `UnitActor.run` right now (Ray sets the process title to the method it executes)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _cmdline(entry.name)[0].startswith(b"ray::UnitActor.run"):
            parent = _parent(entry.name)
            if parent in raylets:
                return parent
    return None


@pytest.mark.slow
def test_sweep_survives_losing_a_worker_node(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    """Head without GPUs + two worker nodes declaring one GPU each (torch sees none: the actors
    fall back to the CPU). One worker node is stopped (its raylet and its processes killed) while
    its actor is inside a unit; the driver runs as `vitsweep run --address` in its own process."""
    port = _free_port()
    _ray_start(cluster_env, "--head", f"--port={port}", "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false")
    raylets = {}
    for _ in range(2):
        nm_port = _free_port()
        _ray_start(cluster_env, f"--address=127.0.0.1:{port}", "--num-cpus=1", "--num-gpus=1",
                   f"--node-manager-port={nm_port}")
        raylets[_raylet_pid(nm_port)] = nm_port

    make_shards(tmp_path / "shards", 5, 3)
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run,
                      models=[{"name": SLOW, "weights": "factory"}], probes=SLOW_MATCH, batch_size=3)
    driver = subprocess.Popen(
        [PYTHON, "-m", "sweep.cli", "run", str(spec), "--address", f"127.0.0.1:{port}", "--device", "gpu",
         "--no-progress"],
        env=cluster_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 180
    victim = None
    while victim is None:
        assert driver.poll() is None and time.monotonic() < deadline, "no actor got busy"
        victim = _busy_actor_raylet(raylets)
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the unit
    # The node goes down as a machine would: its raylet and every process it started (an actor
    # whose raylet alone died could still finish its unit and report back to the driver).
    children = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and _parent(e.name) == victim]
    for pid in (victim, *children):
        os.kill(pid, signal.SIGKILL)
    out, _ = driver.communicate(timeout=300)

    assert driver.returncode == 0, out
    assert "5/5 units done" in out
    assert read_table(run, "match").num_rows == 15
    assert_no_duplicates(run)
    units = read_table(run, "units").to_pylist()
    assert len(units) == 5 and max(u["attempts"] for u in units) == 2
    assert {u["device"] for u in units} == {"cpu"}
    import json

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["cluster"]["nodes"] == 3 and manifest["cluster"]["actor_device"] == "gpu"


@pytest.mark.slow
def test_ray_job_submit_end_to_end_with_token_auth(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    dashboard = _free_port()
    _ray_start(cluster_env, "--head", f"--port={_free_port()}", "--num-cpus=2", "--num-gpus=0",
               "--include-dashboard=true", f"--dashboard-port={dashboard}")
    address = f"http://127.0.0.1:{dashboard}"
    make_shards(tmp_path / "shards", 2, 3, corrupt={4})
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run",
                      probes=[{"name": "match", "params": {"max_steps": 10}}])

    # Without the cluster's token the job server refuses.
    no_token = {k: v for k, v in cluster_env.items() if k != "RAY_AUTH_TOKEN"}
    refused = subprocess.run([RAY, "job", "list", "--address", address], env=no_token, cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "token" in (refused.stdout + refused.stderr).lower()

    # A fresh head answers "No available agent to submit job, please try again later" until its
    # job agent is up (seen on a loaded machine); nothing was submitted then, so try again.
    for _ in range(30):
        job = subprocess.run(
            [RAY, "job", "submit", "--address", address, "--",
             PYTHON, "-m", "sweep.cli", "run", str(spec), "--no-progress"],
            env=cluster_env, cwd=REPO, capture_output=True, text=True, timeout=300,
        )
        if "No available agent" not in job.stdout + job.stderr:
            break
        time.sleep(2)
    assert job.returncode == 0, job.stdout + job.stderr
    assert "2/2 units done" in job.stdout
    run = tmp_path / "run"
    rows = read_table(run, "match").to_pylist()
    assert len(rows) == 6 and sum(r["status"] == "error" for r in rows) == 1
    import json

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["state"] == "finished" and manifest["cluster"]["address"] != "local"
