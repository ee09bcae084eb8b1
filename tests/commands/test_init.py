"""`vitsweep init [DIR]` writes the packaged example specs, never overwrites a file, and what it
writes is a spec `vitsweep run` accepts (the demo spec once its header's shard command has run)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "sweep" / "examples"


def vitsweep(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sweep.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_init_writes_both_specs_into_a_new_folder(tmp_path: Path) -> None:
    proc = vitsweep(tmp_path, "init", "a/b")
    assert proc.returncode == 0, proc.stderr
    for name in ("demo.yaml", "imagenet-val.yaml"):
        assert (tmp_path / "a" / "b" / name).read_bytes() == (EXAMPLES / name).read_bytes()
    again = vitsweep(tmp_path / "a" / "b", "init")  # default folder: the working folder
    assert again.returncode == 2


def test_init_never_overwrites(tmp_path: Path) -> None:
    mine = tmp_path / "imagenet-val.yaml"
    mine.write_text("my edits\n")
    before = mine.stat().st_mtime_ns
    proc = vitsweep(tmp_path, "init", ".")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "already exist" in proc.stderr and "Traceback" not in proc.stderr
    assert mine.read_text() == "my edits\n" and mine.stat().st_mtime_ns == before
    assert not (tmp_path / "demo.yaml").exists(), "nothing may be written when one file is in the way"

    a_file = tmp_path / "plain"
    a_file.write_text("x")
    assert vitsweep(tmp_path, "init", "plain").returncode == 2


def test_written_specs_are_accepted_by_run(tmp_path: Path) -> None:
    assert vitsweep(tmp_path, "init").returncode == 0
    # The demo spec's header says how to make its shards: run exactly that command.
    header = [line.lstrip("# ").strip() for line in (tmp_path / "demo.yaml").read_text().splitlines()
              if line.lstrip("# ").startswith("vitsweep shards make")]  # fmt: skip
    assert len(header) == 1
    shards = vitsweep(tmp_path, *shlex.split(header[0])[1:])
    assert shards.returncode == 0, shards.stderr

    from sweep.run.spec import load_spec

    cwd = os.getcwd()
    os.chdir(tmp_path)  # the demo spec names its shards relative to the working folder
    try:
        demo = load_spec("demo.yaml")
        full = load_spec("imagenet-val.yaml")
    finally:
        os.chdir(cwd)
    assert len(demo.shards) == 2 and len(demo.units) == 6  # 3 probe settings x 2 shards
    assert len(full.shards) == 50 and len(full.units) == 750  # as its header says
