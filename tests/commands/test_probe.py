"""`vitsweep probe`: the single-pair command end to end. `vitsweep(...)` runs it in a subprocess as
a user runs it (the two full probes and two refusals); `vitsweep_here(...)` runs the same entry
point in this process (tests/support/cli_inproc.py) for the image formats and the other refusals, where a
subprocess would spend its time importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from tests.support.cli_inproc import run_cli

ROOT = Path(__file__).resolve().parents[2]


def vitsweep(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweep.cli", "probe", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def vitsweep_here(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_cli("probe", *args, cwd=cwd)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = {
        "a.jpg": Image.fromarray(data.astronaut()),
        "b.jpg": Image.fromarray(data.chelsea()),
        "gray.png": Image.fromarray(data.camera()),
        "rgba.png": Image.fromarray(data.astronaut()).convert("RGBA"),
        "palette.gif": Image.fromarray(data.coffee()).convert("P"),
        "tiny.png": Image.new("RGB", (1, 1), (200, 10, 10)),
        "wide.webp": Image.fromarray(np.zeros((40, 300, 3), np.uint8) + 90),
    }
    out = {}
    for name, img in paths.items():
        img.save(folder / name)
        out[name] = folder / name
    (folder / "corrupt.jpg").write_bytes((folder / "a.jpg").read_bytes()[:200])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    for name in ("corrupt.jpg", "empty.png", "notes.txt"):
        out[name] = folder / name
    return out


def test_match_on_two_photos_with_a_random_init_vit(images, tmp_path):
    proc = vitsweep("match", "--model", "vit_tiny_patch16_224", "--weights", "random:0",
                    "--src", str(images["a.jpg"]), "--tgt", str(images["b.jpg"]), "--out", str(tmp_path / "o"), "--json",
                    "--param", "max_steps=150")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # one JSON object, nothing else on stdout
    for key in ("success", "steps", "sq_l2", "cos", "rel_dist", "rel_dist_start", "pix_l2", "pix_linf", "psnr", "ssim",
                "quant_cos", "quant_rel_dist", "pred_src", "pred_tgt", "pred_adv", "loss_trajectory"):
        assert key in report, key
    assert report["success"] is True and report["cos"] >= 0.99
    assert report["weights"] == "random:0" and report["params"]["max_steps"] == 150
    for name in ("src", "tgt", "adv", "diff"):
        with Image.open(tmp_path / "o" / f"{name}.png") as img:
            assert img.size == (224, 224) and img.mode == "RGB"
    assert json.loads((tmp_path / "o" / "metrics.json").read_text()) == report


def test_lipschitz_json_lists_every_estimate_and_the_sigmas(images, tmp_path):
    proc = vitsweep("lipschitz", "--model", "tests.support.encoders:linear_encoder",
                    "--src", str(images["a.jpg"]), "--tgt", str(images["b.jpg"]), "--out", str(tmp_path), "--json",
                    "--param", "top_k=3", "--param", "h=[0.1, 1.0]", "--param", "n_random=2", "--param", "n_null=2")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["sigmas"]) == 3 and report["sigmas"] == sorted(report["sigmas"], reverse=True)
    families = {(e["family"], e["direction"], e["h"]) for e in report["estimates"]}
    assert len(families) == (2 + 3 + 1 + 2) * 2
    assert {"random", "top", "grad", "null"} == {e["family"] for e in report["estimates"]}  # the default families
    assert all(e["rank"] == 16 for e in report["estimates"])


@pytest.mark.parametrize("name", ["gray.png", "rgba.png", "palette.gif", "tiny.png", "wide.webp"])
def test_any_image_pillow_reads_is_accepted(images, tmp_path, name):
    proc = vitsweep_here("perturb", "--model", "tests.support.encoders:linear_encoder", "--src", str(images[name]),
                         "--tgt", str(images["b.jpg"]), "--out", str(tmp_path), "--json", "--param", "steps=2",
                         "--param", "eps=[0.01, 0.02]")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    assert [r["eps"] for r in rows] == [0.01, 0.02]
    assert all(r["pix_linf"] <= r["eps"] + 1e-6 for r in rows)


SUBPROCESS_REFUSALS = ("no such file", "unknown timm model")


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--src": "missing.jpg"}, "no such file"),
        ({"--src": "corrupt.jpg"}, "not a readable image"),
        ({"--tgt": "empty.png"}, "empty file"),
        ({"--src": "notes.txt"}, "not a readable image"),
        ({"--model": "vit_does_not_exist"}, "unknown timm model"),
        ({"--weights": "hub:xyz"}, "unknown weight source"),
        ({"--weights": "file:/nope.safetensors"}, "does not exist"),
        ({"--param": "learning_rate=0.1"}, "unknown match parameter 'learning_rate'"),
        ({"--param": "lr=fast"}, "bad match parameter lr"),
        ({"--param": "lr"}, "write key=value"),
        ({"--param": "optimizer=newton"}, "bad match parameter optimizer"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(images, tmp_path, change, message):
    args = {"--model": "tests.support.encoders:linear_encoder", "--src": "a.jpg", "--tgt": "b.jpg"}
    args.update(change)
    argv = ["match", "--out", str(tmp_path)]
    for flag, value in args.items():
        if flag in ("--src", "--tgt"):
            value = str(images.get(value, images["a.jpg"].parent / value))
        argv += [flag, value]
    # two of them as a user runs them (a subprocess), the rest through the same entry point here
    proc = (vitsweep if message in SUBPROCESS_REFUSALS else vitsweep_here)(*argv)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert lines[0].startswith("vitsweep probe: error:")
