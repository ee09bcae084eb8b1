"""The driver's output check with the spec's own shards inside the output folder (issue 24 item 9:
the README's `shards make --out demo-run/shards` then `run` of a spec with `output: demo-run` was
refused as "holds files (shards) but is not a vitsweep run"). No Ray: only the checks before it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.sweeps import LINEAR, make_shards, write_spec

from sweep.errors import UserError
from sweep.run.work import find_work, shards_inside
from sweep.run.spec import load_spec
from sweep.run.store import RunStore


def test_shards_inside_the_output_are_the_specs_own(tmp_path: Path) -> None:
    run = tmp_path / "demo-run"
    make_shards(run / "shards", 2, 2)
    spec = write_spec(tmp_path / "spec.yaml", str(run / "shards"), run, models=[{"name": LINEAR, "weights": "factory"}],
                      probes=["match"])
    loaded = load_spec(str(spec))
    store = RunStore(str(run))
    assert shards_inside(store, loaded.shards) == {"shards"}
    work = find_work(store, loaded, force=False, allow=(), yes=True)
    assert len(work.todo) == 2 and not work.done


def test_other_files_in_the_output_are_still_refused(tmp_path: Path) -> None:
    run = tmp_path / "demo-run"
    make_shards(tmp_path / "shards", 1, 2)
    (run / "shards").mkdir(parents=True)  # a folder named shards, but not the spec's shards
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run,
                      models=[{"name": LINEAR, "weights": "factory"}], probes=["match"])
    loaded = load_spec(str(spec))
    assert shards_inside(RunStore(str(run)), loaded.shards) == set()
    with pytest.raises(UserError, match="holds files \\(shards\\) but is not a vitsweep run"):
        find_work(RunStore(str(run)), loaded, force=False, allow=(), yes=True)


def test_shards_inside_an_object_store_output() -> None:
    from types import SimpleNamespace

    store = SimpleNamespace(root="s3://bucket/demo-run", is_local=False)  # what shards_inside reads
    assert shards_inside(store, ["s3://bucket/demo-run/shards/a.tar", "s3://bucket/other/b.tar"]) == {"shards"}
