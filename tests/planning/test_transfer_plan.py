"""`vitsweep plan` counts the transfer pass (issue 23): one row per match setting with
`transfer: true`, 3 forwards per pair and model, and the pass really runs that many."""

from __future__ import annotations

from pathlib import Path

import pytest

import sweep.finished.transfer as transfer_mod
from sweep.finished.transfer import transfer_run
from sweep.planning.plan import make_plan
from sweep.run.spec import load_spec
from sweep.run.store import RunStore
from sweep.run.worker import EncoderCache, run_unit
from tests.support.sweeps import LINEAR, make_shards, write_spec

MODELS = [{"name": LINEAR, "weights": "factory"}, {"name": LINEAR, "weights": "factory", "head": "none"},
          {"name": "tests.support.tiny_models:tiny_clip", "weights": "factory"}]
PROBES = [{"name": "match", "params": {"max_steps": 5, "log_every": 5}},
          {"name": "perturb", "params": {"eps": [0.01], "steps": 2, "random_draws": 1}}]


def test_plan_rows_and_the_pass_count_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_shards(tmp_path / "shards", 1, 3)
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run", models=MODELS,
                      probes=PROBES, transfer=True, gallery=0)
    loaded = load_spec(spec)
    plan = make_plan(loaded, pairs_per_shard=3, previous=False)
    rows = [r for r in plan.rows if r.probe == "transfer"]
    assert len(rows) == 3  # one per model's match setting, none for perturb
    assert all(r.per_pair.plain == 3 * 3 and r.per_pair.backward == 0 and r.pairs == 3 for r in rows)
    no_transfer = make_plan(load_spec(write_spec(tmp_path / "b.yaml", str(tmp_path / "shards"), tmp_path / "r2",
                                                 models=MODELS, probes=PROBES)), pairs_per_shard=3, previous=False)
    assert not [r for r in no_transfer.rows if r.probe == "transfer"]
    assert plan.image_passes == pytest.approx(no_transfer.image_passes + 3 * 3 * 3 * 3)

    cache = EncoderCache("cpu")
    for unit in loaded.units:
        run_unit(unit, cache, str(tmp_path / "run"), run_id="p")
    seen = {"images": 0}
    real = transfer_mod.embed_fp32

    def counting(enc, pixels, chunk=64):
        seen["images"] += len(pixels)
        return real(enc, pixels, chunk)

    monkeypatch.setattr(transfer_mod, "embed_fp32", counting)
    summary = transfer_run(RunStore(tmp_path / "run"), loaded, device="cpu")
    assert seen["images"] == summary.forwards == sum(r.per_pair.plain * r.pairs for r in rows)  # every pair ok
