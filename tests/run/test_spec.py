"""Sweep specs: validation (one line naming file and key, exit 2), grids, stable unit ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweep.cli import main
from sweep.errors import UserError
from sweep.run.spec import load_spec, parse_spec
from tests.support.sweeps import LINEAR, make_shards, write_spec


@pytest.fixture()
def shards(tmp_path: Path) -> Path:
    make_shards(tmp_path / "shards", 2, 2)
    return tmp_path / "shards"


def _spec(shards: Path, **extra) -> dict:
    base = {"models": [{"name": LINEAR, "weights": "factory"}], "probes": [{"name": "match"}], "shards": str(shards)}
    return {**base, **extra}


def test_grid_expands_cartesian_product_times_shards(shards: Path) -> None:
    loaded = parse_spec(_spec(shards, probes=[{"name": "match", "params": {"max_steps": [10, 20], "lr": [0.01, 0.1]}}]))
    assert len(loaded.settings) == 4
    assert len(loaded.units) == 4 * 2
    assert len({u.unit_id for u in loaded.units}) == 8
    assert {u.params["max_steps"] for u in loaded.units} == {10, 20}


def test_list_valued_parameter_is_one_setting_and_list_of_lists_a_grid(shards: Path) -> None:
    one = parse_spec(_spec(shards, probes=[{"name": "perturb", "params": {"eps": [0.01, 0.02]}}]))
    assert len(one.settings) == 1
    grid = parse_spec(_spec(shards, probes=[{"name": "perturb", "params": {"eps": [[0.01], [0.02, 0.04]]}}]))
    assert len(grid.settings) == 2


def test_unit_ids_are_stable_and_ignore_batch_size(shards: Path) -> None:
    a = parse_spec(_spec(shards, batch_size=4))
    b = parse_spec(_spec(shards, batch_size=64, max_attempts=5, gallery=4, compile=True))
    c = parse_spec(_spec(shards, seed=1))
    assert [u.unit_id for u in a.units] == [u.unit_id for u in b.units]
    assert a.result_hash == b.result_hash and a.spec_hash != b.spec_hash
    assert {u.unit_id for u in a.units}.isdisjoint(u.unit_id for u in c.units)


def test_model_shorthand_and_defaults(shards: Path) -> None:
    loaded = parse_spec(_spec(shards, models=["vit_tiny_patch16_224"]))
    unit = loaded.units[0]
    assert (unit.model, unit.weights, unit.embed) == ("vit_tiny_patch16_224", "random:0", "pre_logits")
    assert unit.gallery == 4 and loaded.spec.max_attempts == 3


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"batch_size": 0}, "batch_size"),
        ({"models": [{"name": LINEAR, "colour": "red"}]}, "unknown key 'models.0.colour'"),
        ({"models": [{"name": LINEAR, "weights": "imagenet"}]}, "models.0.weights"),
        ({"probes": [{"name": "nope"}]}, "probes.0.name: unknown probe 'nope'"),
        ({"probes": [{"name": "match", "params": {"speed": 3}}]}, "probes.0.params"),
        ({"shards": "/nonexistent/shards-*.tar"}, "shards:"),
    ],
)
def test_bad_spec_is_one_line_naming_file_and_key(tmp_path: Path, shards: Path, change: dict, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**_spec(shards), **change}))
    with pytest.raises(UserError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and expected in message


def test_missing_key_and_cli_exit_status(tmp_path: Path, shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"models": [LINEAR], "shards": str(shards)}))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing key 'probes'" in err and str(path) in err


def test_spec_round_trips_as_yaml(tmp_path: Path, shards: Path) -> None:
    path = write_spec(tmp_path / "spec.yaml", str(shards), tmp_path / "run")
    loaded = load_spec(path)
    again = tmp_path / "again.yaml"
    again.write_text(loaded.to_yaml())
    assert [u.unit_id for u in load_spec(again).units] == [u.unit_id for u in loaded.units]


def test_a_model_listed_twice_runs_once_and_an_empty_grid_is_refused(shards: Path) -> None:
    once = parse_spec(_spec(shards))
    twice_spec = _spec(shards)
    twice_spec["models"] = twice_spec["models"] * 2
    assert [u.unit_id for u in parse_spec(twice_spec).units] == [u.unit_id for u in once.units]
    empty = _spec(shards)
    empty["probes"] = [{"name": "match", "params": {"lr": []}}]
    with pytest.raises(UserError, match=r"probes\.0\.params\.lr: an empty list"):
        parse_spec(empty)


def test_unreachable_ray_address_is_one_line_not_a_hang(tmp_path: Path, shards: Path) -> None:
    import subprocess
    import sys

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec(shards)))
    proc = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "run", str(spec), "--address", "127.0.0.1:1", "--out", str(tmp_path / "run"), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["vitsweep run: error: cannot connect to the Ray cluster at 127.0.0.1:1: Connection refused"]
