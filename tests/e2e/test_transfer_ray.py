"""Issue 23 end to end: a demo-sized sweep through the driver and Ray with two CLIP-shaped models
(random init, tiny open_clip text towers) fills zs_* and, with `transfer: true`, the transfer
table after the labels pass; the report shows both."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.run.driver import run_sweep
from sweep.run.spec import load_spec
from tests.support.sweeps import make_shards, read_table, write_spec

pytestmark = pytest.mark.slow

CLIPS = ("tests.support.tiny_models:tiny_clip", "tests.support.tiny_models:tiny_clip_b")


def test_two_clip_shaped_models_fill_zeroshot_and_transfer(tmp_path: Path, local_ray: dict[str, str]) -> None:
    make_shards(tmp_path / "shards", 1, 4, size=16)
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\nfish\nhorse\n")
    models = [{"name": name, "weights": "factory", "text": "tiny:0", "classes": f"file:{tmp_path / 'classes.txt'}",
               "templates": "simple"} for name in CLIPS]
    probes = [{"name": "match", "params": {"max_steps": 30, "log_every": 10}},
              {"name": "perturb", "params": {"eps": [0.03], "steps": 2, "random_draws": 1}}]
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run", models=models,
                      probes=probes, transfer=True)
    outcome = run_sweep(load_spec(spec), actors=1, show_progress=False)
    run = tmp_path / "run"
    assert outcome.units_done == 4 and outcome.units_failed == 0
    for probe in ("match", "perturb"):
        rows = [r for r in read_table(run, probe).to_pylist() if r["status"] == "ok"]
        assert len(rows) == 2 * 4
        assert all(r[f"zs_{role}_name"] in ("cat", "dog", "bird", "fish", "horse")
                   for r in rows for role in ("src", "tgt", "adv"))
    # the classifier depends on the text side only (tower, weights, classes, templates, D): both
    # models' settings share one, built once and cached in the run
    assert len(list((run / "zeroshot").glob("*.parquet"))) == 1
    transfer = read_table(run, "transfer").to_pylist()
    assert len(transfer) == 2 * 2 * 4 and sum(r["same_setting"] for r in transfer) == 8
    assert all(r["zs_adv"] is not None for r in transfer)
    from analysis.report import write_report

    paths = write_report([run], tmp_path / "report")
    html = paths["html"].read_text()
    assert 'id="transfer"' in html and "zero-shot" in html
