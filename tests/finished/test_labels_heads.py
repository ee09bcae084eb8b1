"""Head labels named or switched off by the user (`head:` of a spec's model): checked before any
unit runs, carried into the unit's rows and into the run's labels note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweep.errors import UserError
from sweep.finished.labels import label_run
from sweep.run.spec import load_spec
from sweep.run.worker import EncoderCache, run_unit
from tests.support.sweeps import make_shards, read_table, write_spec

TINY = "tests.support.tiny_models:tiny_vit"  # a factory whose `classifier` has 10 unnamed classes
MATCH = [{"name": "match", "params": {"max_steps": 3}}]


def _spec(tmp_path: Path, head: str | None) -> Path:
    model = {"name": TINY, "weights": "factory", **({"head": head} if head else {})}
    make_shards(tmp_path / "shards", 1, 2, size=32)
    return write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run", models=[model], probes=MATCH)


def _run(tmp_path: Path, head: str | None) -> list[dict]:
    loaded = load_spec(_spec(tmp_path, head))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "spec.yaml").write_text(loaded.to_yaml())
    for unit in loaded.units:
        run_unit(unit, EncoderCache("cpu"), str(tmp_path / "run"), run_id="r")
    label_run(tmp_path / "run")
    return read_table(tmp_path / "run", "match").to_pylist()


def test_a_class_name_file_names_the_head(tmp_path: Path) -> None:
    names = tmp_path / "classes.txt"
    names.write_text("".join(f"thing {i}\n" for i in range(10)))
    rows = _run(tmp_path, f"file:{names}")
    for row in rows:
        assert row["pred_adv"] is not None and row["pred_adv_name"] == f"thing {row['pred_adv']}"
        assert row["pred_src_name"] == f"thing {row['pred_src']}"
    note = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert note["settings"][0]["head"] == {"label_set": "file:classes.txt", "note": ""}


def test_head_none_switches_head_labels_off_and_changes_the_unit_ids(tmp_path: Path) -> None:
    rows = _run(tmp_path, "none")
    assert rows and all(r[c] is None for r in rows for c in ("pred_src", "pred_adv", "prob_adv", "pred_adv_name"))
    note = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert note["settings"][0]["head"]["note"] == "head labels switched off (head: none)"
    auto = load_spec(write_spec(tmp_path / "auto.yaml", str(tmp_path / "shards"), tmp_path / "run",
                                models=[{"name": TINY, "weights": "factory"}], probes=MATCH))
    (none_unit,) = load_spec(tmp_path / "spec.yaml").units
    assert auto.units[0].unit_id != none_unit.unit_id and auto.units[0].config_hash != none_unit.config_hash


@pytest.mark.parametrize(
    "head,message",
    [
        ("imagenet-1k", "names 1000 classes; the head of tests.support.tiny_models:tiny_vit has 10"),
        ("imagenet-99k", "unknown head label set 'imagenet-99k'"),
        ("file:/no/such/names.txt", "no such class-name file"),
    ],
)
def test_a_head_that_does_not_fit_is_refused_when_the_spec_loads(tmp_path: Path, head: str, message: str) -> None:
    with pytest.raises(UserError, match="models.0.head: .*" + message.replace("(", r"\(")) as info:
        load_spec(_spec(tmp_path, head))
    assert "\n" not in str(info.value)


def test_a_clip_projection_cannot_be_named_imagenet(tmp_path: Path) -> None:
    make_shards(tmp_path / "shards", 1, 1)
    spec = write_spec(tmp_path / "s.yaml", str(tmp_path / "shards"), tmp_path / "run", probes=MATCH,
                      models=[{"name": "vit_base_patch16_clip_224.openai", "head": "imagenet-1k"}])
    with pytest.raises(UserError, match="names 1000 classes; the head of vit_base_patch16_clip_224.openai has 512"):
        load_spec(spec)
