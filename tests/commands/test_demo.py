"""`vitsweep demo --weights pretrained`: the trained ViT-Tiny with the paper's matching preset;
offline (no hub, empty cache) it stops before Ray with the encoders' one-line message, and
the default stays the seeded random initialisation."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from sweep.commands import demo
from sweep.run import spec as run_spec
from sweep.probes import build_probe

ROOT = Path(__file__).resolve().parents[2]


def test_pretrained_demo_spec_is_the_trained_tiny_with_the_paper_preset() -> None:
    spec = run_spec.with_weights(run_spec.demo_spec_data(), "pretrained")
    assert spec["models"] == [{"name": "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "weights": "pretrained",
                               "embed": "pre_logits"}]  # fmt: skip
    (match,) = [p for p in spec["probes"] if p["name"] == "match"]
    params = build_probe("match", match["params"]).params
    # The authors' settings (lr 0.08, tau 1e-4 on the squared distance, cos 0.97, plain GD, fp32); steps capped.
    assert (params.preset, params.lr, params.tau, params.min_cos, params.optimizer, params.precision) == (
        "paper", 0.08, 1e-4, 0.97, "gd", "fp32")
    assert params.max_steps == run_spec.PRETRAINED_MAX_STEPS == 300
    assert {p["name"] for p in spec["probes"]} == {"match", "perturb", "lipschitz"}

    default = run_spec.with_weights(run_spec.demo_spec_data(), "random:0")
    assert default["models"][0]["name"] == "vit_tiny_patch16_224" and default["models"][0]["weights"] == "random:0"


def test_pretrained_demo_offline_fails_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": "https://127.0.0.1:9", "RAY_AUTH_MODE": "disabled"}  # no hub, nothing cached
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "demo", "--weights", "pretrained", "--out", str(out), "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "pretrained weights for 'vit_tiny_patch16_224.augreg_in21k_ft_in1k' could not be loaded" in proc.stderr
    assert not out.exists(), "nothing may be built before the weights are there"


def test_bad_weights_is_one_line() -> None:
    parser = argparse.ArgumentParser()
    demo.register(parser)
    args = parser.parse_args(["--weights", "imagenet"])
    try:
        demo.run(args)
    except demo.UserError as err:
        assert "--weights" in str(err) and "pretrained, random:<seed> or file:<path>" in str(err)
    else:
        raise AssertionError("bad --weights accepted")
