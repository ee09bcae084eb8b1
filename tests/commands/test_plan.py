"""`vitsweep plan` from the command line: the full ImageNet spec's counts worked out by hand,
`--calibrate` on the CPU for ViT-Tiny, a factory encoder's lipschitz count (its embedding size
from the calibration), and bad input. `vitsweep(...)` is a subprocess as a user runs it;
`vitsweep_here(...)` the same entry point in this process (tests/support/cli_inproc.py), for the second
and third look at a spec whose first look was a subprocess (it would spend its time importing torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli_inproc import run_cli
from tests.support.sweeps import make_shards, write_spec

ROOT = Path(__file__).resolve().parents[2]


def vitsweep(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sweep.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def vitsweep_here(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd)


def test_imagenet_val_plan_by_hand(tmp_path: Path) -> None:
    assert vitsweep(tmp_path, "init").returncode == 0
    proc = vitsweep(tmp_path, "plan", "imagenet-val.yaml", "--pairs-per-shard", "1000", "--gpus", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["units"] == 3 * (2 + 2 + 1) * 50 and plan["pairs"] == 50_000 and plan["unit_pairs"] == 750 * 1000
    # Image passes per pair, worked out from what each probe does (a step counts a forward and a backward):
    match = (1 + 1 + 3) + 2 * 12_000  # target, the fp32 confirmation of a stop, 3 re-check forwards; 12,000 steps
    perturb = (2 + 4 * (2 + 8)) + 2 * (4 * 50)  # clean pair, per eps (4 in each default grid): last and best iterate + 8 draws; 50 steps

    def lipschitz(dim: int) -> int:  # the whole Jacobian (null, jacobian fp32): one fp32 forward, D backward rows
        directions = 4 + 8 + 1 + 4 + 4  # random, top, grad, null, off_top
        return (
            (4 + 4 * directions)  # plain: f64 f(x0), f(t) (D and the loss's gradient reuse them), fp32 f(x0), f(t); 4 h each
            + 1 + dim  # the Jacobian: its one fp32 forward and D backward rows sharing it; top and off_top from it
            + 2 * 1  # backward: the matching gradient
            + 2 * directions  # jvp: ||J v|| per direction
        )

    dims = {"augreg2": 768, "openai": 768, "laion2b": 1280}  # ViT-B/16, ViT-B/16 CLIP, ViT-H/14 CLIP (pre-logits)
    assert plan["image_passes"] == 50_000 * sum(2 * match + 2 * perturb + lipschitz(d) for d in dims.values())
    rows = {(r["model"].split(".")[1].split("_")[0], r["probe"]): r for r in plan["rows"]}
    assert {tag: rows[(tag, "lipschitz")]["dims"][0] for tag in dims} == dims
    assert [r["exact"] for r in plan["rows"] if r["probe"] != "match"] == [True] * 9
    assert not any(r["exact"] for r in plan["rows"] if r["probe"] == "match")
    assert plan["image_passes_expected"] == plan["image_passes"]  # no earlier run to learn from
    assert plan["gpu_hours"] == pytest.approx(plan["seconds"] / 3600, rel=1e-3)
    assert plan["wall_seconds"] == pytest.approx(plan["seconds"] / 8, rel=1e-3)
    assert plan["gpus"] == 8 and all("H100" in s for s in plan["rate_sources"])
    text = vitsweep_here(tmp_path, "plan", "imagenet-val.yaml", "--pairs-per-shard", "1000", "--gpus", "8")
    assert text.returncode == 0 and "GPU-hours" in text.stdout and "vit_huge_patch14_clip_224.laion2b" in text.stdout
    assert "upper bound, match (preset=paper" in text.stdout and "embedding size D = 1280" in text.stdout


def test_calibrate_on_cpu_for_vit_tiny(tmp_path: Path) -> None:
    make_shards(tmp_path / "shards", 2, 3)
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run",
                      models=[{"name": "vit_tiny_patch16_224", "weights": "random:0"}], batch_size=2)  # fmt: skip
    proc = vitsweep(tmp_path, "plan", str(spec), "--calibrate", "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["calibrated"] is True and plan["units"] == 3 * 2 and plan["pairs"] == 6
    assert plan["seconds"] > 0 and plan["gpu_hours"] > 0
    assert len(plan["rate_sources"]) == 1 and plan["rate_sources"][0].startswith("measured now on CPU")


def test_factory_encoder_lipschitz_count_from_calibration(tmp_path: Path) -> None:
    # a factory encoder's embedding size is known only by running it: --calibrate measures it
    make_shards(tmp_path / "shards", 2, 3)
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run")  # the linear encoder, FAST_PROBES
    proc = vitsweep(tmp_path, "plan", str(spec), "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    lipschitz = next(r for r in plan["rows"] if r["probe"] == "lipschitz")
    assert lipschitz["per_pair"] is None and plan["image_passes"] is None and plan["seconds"] is None
    assert all(r["per_pair"] is not None for r in plan["rows"] if r["probe"] != "lipschitz")
    text = vitsweep_here(tmp_path, "plan", str(spec))
    assert text.returncode == 0 and "use --calibrate" in text.stdout

    proc = vitsweep_here(tmp_path, "plan", str(spec), "--calibrate", "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    lipschitz = next(r for r in json.loads(proc.stdout)["rows"] if r["probe"] == "lipschitz")
    assert lipschitz["dims"] == [16, 3 * 8 * 8] and lipschitz["exact"]
    # families random (2) and top (2; D = 16 > top_k) at 2 h; subspace iteration on 2 + 4 vectors, 3 iterations
    # (no null family: no Jacobian rows)
    assert lipschitz["per_pair"] == {"plain": 4 + 2 * (2 + 2), "backward": 3 * 6, "jvp": 4 * 6 + (2 + 2), "rows": 0}
    assert lipschitz["image_passes"] == 6 * (12 + 2 * 18 + 2 * 28)


@pytest.mark.parametrize("args, message", [
    (["missing.yaml"], "no such spec file"),
    (["spec.yaml", "--gpus", "0"], "--gpus must be at least 1"),
])  # fmt: skip
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    make_shards(tmp_path / "shards", 1, 2)
    write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run")
    proc = vitsweep(tmp_path, "plan", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr
