"""The README's own path, verbatim, in a fresh folder (issue 24 item 9): `vitsweep init specs`,
the demo's `shards make` line, `plan` and `run` of specs/demo.yaml, each copied from README.md,
and the commands `init` says to run next. `run` used to stop with "demo-run: holds files
(shards) but is not a vitsweep run" and `init`'s "next: vitsweep plan ..." failed before the shards."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.sweeps import REPO, kill_ray_processes, ray_env

pytestmark = pytest.mark.slow


def readme_line(prefix: str) -> list[str]:
    """The README command starting with `prefix`, without its comment, as argv after `vitsweep`."""
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        command = line.split("#", 1)[0].strip()
        if command.startswith(prefix):
            return shlex.split(command)[1:]
    raise AssertionError(f"README.md has no line starting with {prefix!r}")


def vitsweep(cwd: Path, env: dict[str, str], args: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweep.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.timeout(1800)
def test_readme_path_init_shards_plan_run(tmp_path: Path) -> None:
    env = {**ray_env(), "PYTHONPATH": str(REPO)}
    try:
        init = vitsweep(tmp_path, env, readme_line("vitsweep init specs"))
        assert init.returncode == 0, init.stderr
        next_line = init.stdout.splitlines()[-1]
        assert "vitsweep shards make" in next_line, next_line  # init says to make the shards first
        said = [shlex.split(part)[1:] for part in next_line.split("`")[1::2]]  # the commands it names
        assert [a[0] for a in said] == ["shards", "plan", "run"], said
        assert said[0] == readme_line("vitsweep shards make")
        assert said[1] == ["plan", "specs/demo.yaml"] and said[2] == ["run", "specs/demo.yaml"]

        shards = vitsweep(tmp_path, env, said[0])
        assert shards.returncode == 0, shards.stderr
        plan = vitsweep(tmp_path, env, said[1])
        assert plan.returncode == 0 and "6 units" in plan.stdout, plan.stderr
        plan = vitsweep(tmp_path, env, readme_line("vitsweep plan specs/demo.yaml"))
        assert plan.returncode == 0, plan.stderr
        run = vitsweep(tmp_path, env, readme_line("vitsweep run specs/demo.yaml"), timeout=1500)
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
        progress = json.loads((tmp_path / "demo-run" / "progress.json").read_text())
        assert progress["state"] == "finished" and progress["units_done"] == 6
        assert (tmp_path / "demo-run" / "shards").is_dir()
    finally:
        kill_ray_processes(env["RAY_TMPDIR"])
