"""Run-directory storage: atomic writes, done-markers, stale temporary files, remote URIs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep.run import store as store_module
from sweep.schema import to_table
from sweep.run.store import RunStore


def _units(unit_id: str, status: str = "ok") -> pa.Table:
    return to_table("units", [{"run_id": "r", "unit_id": unit_id, "model": "m/x", "weights": "w", "probe": "match",
                               "config_hash": "c", "status": status}])


def _pairs(unit_id: str, n: int = 2) -> pa.Table:
    return to_table("pairs", [{"run_id": "r", "unit_id": unit_id, "pair_id": f"p{i}", "model": "m/x",
                               "weights": "random:0", "probe": "match", "config_hash": "c", "status": "ok"}
                              for i in range(n)])


def test_unit_tables_land_in_partitions_units_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path)
    order: list[str] = []
    real = RunStore.write_parquet
    monkeypatch.setattr(RunStore, "write_parquet", lambda self, rel, t: (order.append(rel.split("/")[1]), real(self, rel, t)))
    store.write_unit_tables("match", "m/x", "u1", {"units": _units("u1"), "pairs": _pairs("u1")})
    assert order == ["pairs", "units"]
    assert (tmp_path / "results/units/probe=match/model=m%2Fx/u1.parquet").is_file()
    assert pq.read_table(tmp_path / "results/pairs/probe=match/model=m%2Fx/u1.parquet").num_rows == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_rewrite_replaces_instead_of_adding(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    for _ in range(2):
        store.write_unit_tables("match", "m", "u1", {"pairs": _pairs("u1", 3), "units": _units("u1")})
    files = list((tmp_path / "results/pairs").rglob("*.parquet"))
    assert len(files) == 1 and pq.read_table(files[0]).num_rows == 3


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(table, where, **kwargs):
        Path(where).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(store_module.pq, "write_table", boom)
    with pytest.raises(OSError):
        RunStore(tmp_path).write_parquet("results/pairs/x/u1.parquet", _pairs("u1"))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_done_markers_status_and_clean_tmp(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.write_unit_tables("match", "m", "ok1", {"units": _units("ok1")})
    store.write_unit_tables("match", "m", "bad1", {"units": _units("bad1", "error")})
    store.write_parquet("results/pairs/probe=match/model=m/half.parquet", _pairs("half"))  # no units row
    stale = tmp_path / "results/pairs/probe=match/model=m/.half.0123.tmp"
    stale.write_bytes(b"partial")
    assert store.unit_status() == {"ok1": "ok", "bad1": "error"}
    assert store.done_unit_ids() == {"ok1"}
    assert store.clean_tmp() == 1 and not stale.exists()
    store.remove_unit("match", "m", "bad1")
    assert store.unit_status() == {"ok1": "ok"}


def test_empty_directory_has_nothing_done(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "new")
    assert store.done_unit_ids() == set() and store.clean_tmp() == 0 and store.read_json("manifest.json") is None


def test_json_and_text_round_trip(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path))
    store.write_json("progress.json", {"state": "running"})
    assert store.read_json("progress.json") == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


def test_fsspec_uri(tmp_path: Path) -> None:
    store = RunStore("memory://vitsweep-test/run")
    assert not store.is_local
    store.write_unit_tables("match", "m", "u1", {"pairs": _pairs("u1"), "units": _units("u1")})
    store.write_json("progress.json", {"a": 1})
    assert store.done_unit_ids() == {"u1"}
    assert store.read_json("progress.json") == {"a": 1}
    pickled = __import__("pickle").loads(__import__("pickle").dumps(store))
    assert pickled.done_unit_ids() == {"u1"}


def test_rerun_with_another_spec_is_refused_unless_force(tmp_path: Path) -> None:
    from sweep.errors import UserError
    from sweep.run.manifest import prepare_run
    from sweep.run.spec import load_spec
    from tests.support.sweeps import make_shards, write_spec

    make_shards(tmp_path / "shards", 1, 2)
    store = RunStore(tmp_path / "run")
    first = prepare_run(store, load_spec(write_spec(tmp_path / "a.yaml", str(tmp_path / "shards"), tmp_path / "run")))
    # Only the batch size differs: the same rows, accepted, same run id.
    same = prepare_run(store, load_spec(write_spec(tmp_path / "b.yaml", str(tmp_path / "shards"), tmp_path / "run",
                                                   batch_size=2)))
    assert same["run_id"] == first["run_id"]
    other = load_spec(write_spec(tmp_path / "c.yaml", str(tmp_path / "shards"), tmp_path / "run", seed=7))
    with pytest.raises(UserError, match="different spec"):
        prepare_run(store, other)
    forced = prepare_run(store, other, force=True)
    assert forced["run_id"] == first["run_id"]
    assert len(list((tmp_path / "run" / "history").glob("spec-*.yaml"))) == 1
    assert "seed: 7" in (tmp_path / "run" / "spec.yaml").read_text()


def test_local_roots_in_every_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for root in (tmp_path / "run", f"{tmp_path}/run/", f"file://{tmp_path}/run", "~/run"):
        store = RunStore(root)
        assert store.is_local and store.base == str(tmp_path / "run"), root
        assert store.path("") == store.base and store.path("a/b.json") == f"{tmp_path}/run/a/b.json"
    remote = RunStore("memory://bucket/some/run/")
    assert not remote.is_local and remote.base == "/bucket/some/run" and remote.root == "memory://bucket/some/run/"
    assert RunStore("mock:///bucket/run/").base == "bucket/run"  # a trailing slash is dropped
    assert RunStore("mock:///bucket/RUNX/").base == "bucket/RUNX"  # and nothing else
    monkeypatch.chdir(tmp_path)
    relative = RunStore("run")  # relative to the working folder, and local
    assert relative.is_local and relative.base == str(tmp_path / "run")


def test_unit_status_reads_only_whole_parquet_files(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    folder = tmp_path / "results/units/probe=match/model=m"
    folder.mkdir(parents=True)
    assert store.unit_status() == {}  # the folder exists but holds no file yet
    (folder / ".u2.0123.tmp").write_bytes(b"PAR1 half a file")  # a writer still at work
    (folder / "notes.txt").write_text("not a table")
    assert store.unit_status() == {}
    store.write_unit_tables("match", "m", "u1", {"units": _units("u1")})
    store.write_unit_tables("perturb", "m", "u3", {"units": _units("u3", "error")})
    assert store.unit_status() == {"u1": "ok", "u3": "error"} and store.done_unit_ids() == {"u1"}


def test_clean_tmp_removes_only_hidden_temp_files(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.write_unit_tables("match", "m", "u1", {"pairs": _pairs("u1"), "units": _units("u1")})
    folder = tmp_path / "results/pairs/probe=match/model=m"
    keep = [folder / "notes.tmp", folder / ".hidden", tmp_path / ".spec.yaml.0a1b.tmp"]  # last: outside results/
    stale = [folder / ".u2.0123abcd.tmp", tmp_path / "results/units/.u3.4567.tmp"]
    for path in keep + stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert store.clean_tmp() == 2
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)
    assert pq.read_table(folder / "u1.parquet").num_rows == 2 and store.clean_tmp() == 0


def test_remove_unit_removes_only_that_units_files(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    for unit in ("u1", "u2"):
        store.write_unit_tables("match", "m", unit, {"pairs": _pairs(unit), "units": _units(unit)})
    store.remove_unit("match", "m", "u1", tables=("pairs",))
    assert not (tmp_path / "results/pairs/probe=match/model=m/u1.parquet").exists()
    assert store.done_unit_ids() == {"u1", "u2"}  # its units row was not in the tables asked
    store.remove_unit("match", "m", "u1")  # every table; the missing pairs file is no error
    assert store.done_unit_ids() == {"u2"}
    assert sorted(p.name for p in tmp_path.rglob("*.parquet")) == ["u2.parquet", "u2.parquet"]


def test_json_text_format_and_values(tmp_path: Path) -> None:
    import datetime as dt

    store = RunStore(tmp_path)
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    store.write_json("progress.json", {"n": 2, "at": when})
    assert store.read_text("progress.json") == '{\n  "n": 2,\n  "at": "2024-01-02 03:04:05+00:00"\n}\n'
    assert store.exists("progress.json") and not store.exists("nope.json") and store.read_text("nope.json") is None
    store.write_text("deep/er/note.txt", "hello")
    assert (tmp_path / "deep/er/note.txt").read_text() == "hello"
