"""Crash order: a unit is done only once every table is written, a failed write never damages a
good file, temporary files are invisible to `*.parquet` readers, a rerun replaces its files."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep.run import store as store_module
from sweep.run.spec import load_spec
from sweep.run.store import TMP_SUFFIX, RunStore
from sweep.run.worker import EncoderCache, run_unit
from sweep.schema import to_table
from tests.support.sweeps import make_shards, read_table, write_spec

MATCH_ONLY = [{"name": "match", "params": {"max_steps": 5, "log_every": 5}}]


def _pairs(unit_id: str, n: int) -> pa.Table:
    return to_table("pairs", [{"run_id": "r", "unit_id": unit_id, "pair_id": f"p{i}", "model": "m",
                               "weights": "w", "probe": "match", "config_hash": "c", "status": "ok"}
                              for i in range(n)])


def _units(unit_id: str) -> pa.Table:
    return to_table("units", [{"run_id": "r", "unit_id": unit_id, "model": "m", "weights": "w",
                               "probe": "match", "config_hash": "c", "status": "ok"}])


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class _WriteLog:
    """Records every path pq.write_table is asked to write, and can fail on a chosen table."""

    def __init__(self, fail_table: str | None = None) -> None:
        self.paths: list[str] = []
        self.fail_table = fail_table
        self.real = pq.write_table

    def __call__(self, table, where, **kwargs) -> None:
        self.paths.append(str(where))
        if self.fail_table is not None and f"/{self.fail_table}/" in str(where):
            Path(where).write_bytes(b"PAR1 half a file")  # what a crash mid-write leaves
            raise OSError(f"disk full while writing {self.fail_table}")
        self.real(table, where, **kwargs)


@pytest.fixture(scope="module")
def unit_spec(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("crash")
    make_shards(tmp / "shards", 1, 3)
    return tmp, load_spec(write_spec(tmp / "spec.yaml", str(tmp / "shards"), tmp / "run", probes=MATCH_ONLY,
                                     gallery=1))


@pytest.mark.parametrize("table", ["match", "pairs", "images"])
def test_a_failed_table_write_leaves_the_unit_not_done(unit_spec, tmp_path: Path, table: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, loaded = unit_spec
    (unit,) = loaded.units
    log = _WriteLog(fail_table=table)
    monkeypatch.setattr(store_module.pq, "write_table", log)
    store = RunStore(tmp_path / "run")
    with pytest.raises(OSError, match="disk full"):
        run_unit(unit, EncoderCache("cpu"), store, run_id="r1")
    assert store.done_unit_ids() == set() and store.unit_status() == {}
    assert not any("/units/" in p for p in log.paths), "the done-marker was written before a table"
    assert not list((tmp_path / "run").rglob("*.tmp")) and not list((tmp_path / "run").rglob("units"))
    # whatever finished before the failure is whole: every *.parquet file reads
    for path in (tmp_path / "run").rglob("*.parquet"):
        pq.read_table(path)


def test_the_done_marker_is_the_last_file_written(unit_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, loaded = unit_spec
    log = _WriteLog()
    monkeypatch.setattr(store_module.pq, "write_table", log)
    store = RunStore(tmp_path / "run")
    summary = run_unit(loaded.units[0], EncoderCache("cpu"), store, run_id="r1")
    tables = [Path(p).parent.parent.parent.name for p in log.paths]
    assert sorted(tables) == ["embeddings", "images", "match", "pairs", "units"] and tables[-1] == "units"
    assert store.done_unit_ids() == {summary.unit_id}


def test_a_good_unit_survives_a_failed_rewrite(unit_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, loaded = unit_spec
    (unit,) = loaded.units
    store = RunStore(tmp_path / "run")
    run_unit(unit, EncoderCache("cpu"), store, run_id="r1")
    before = {table: read_table(tmp_path / "run", table) for table in ("match", "pairs", "units", "images")}
    files = _files(tmp_path / "run")
    monkeypatch.setattr(store_module.pq, "write_table", _WriteLog(fail_table="match"))
    with pytest.raises(OSError):
        run_unit(unit, EncoderCache("cpu"), store, run_id="r1", attempt=2)
    assert _files(tmp_path / "run") == files  # no temp file left, nothing added or removed
    for table, rows in before.items():
        assert read_table(tmp_path / "run", table).equals(rows), table
    assert store.done_unit_ids() == {unit.unit_id}


def test_a_failed_rewrite_keeps_the_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path)
    rel = "results/pairs/probe=match/model=m/u1.parquet"
    store.write_parquet(rel, _pairs("u1", 3))
    log = _WriteLog(fail_table="pairs")
    monkeypatch.setattr(store_module.pq, "write_table", log)
    with pytest.raises(OSError, match="disk full"):
        store.write_parquet(rel, _pairs("u1", 5))
    assert pq.read_table(tmp_path / rel).num_rows == 3
    assert _files(tmp_path) == [rel]
    assert log.paths and log.paths[0] != str(tmp_path / rel), "wrote in place"


def test_temporary_names_are_hidden_siblings_that_never_end_in_parquet(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    log = _WriteLog()
    monkeypatch.setattr(store_module.pq, "write_table", log)
    store = RunStore(tmp_path)
    store.write_unit_tables("match", "m", "u1", {"pairs": _pairs("u1", 2), "units": _units("u1")})
    store.write_unit_tables("match", "m", "u1", {"pairs": _pairs("u1", 2), "units": _units("u1")})
    assert len(log.paths) == 4 and len(set(log.paths)) == 4  # a fresh temporary name every time
    for tmp in map(Path, log.paths):
        final = tmp.parent / "u1.parquet"
        assert not tmp.name.endswith(".parquet") and tmp.name.endswith(TMP_SUFFIX), tmp.name
        assert re.fullmatch(r"\.u1\.[0-9a-f]+\.tmp", tmp.name), tmp.name  # .<unit>.<random hex>.tmp
        assert tmp.parent == final.parent  # same folder: the rename is atomic
        assert final.is_file() and not tmp.exists()


def test_a_killed_writer_leaves_only_a_hidden_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer killed mid-file (no exception handler runs) leaves its temp file: readers that glob
    `*.parquet` never see it, and clean_tmp removes it and nothing else."""
    store = RunStore(tmp_path)
    store.write_unit_tables("match", "m", "good", {"pairs": _pairs("good", 2), "units": _units("good")})

    class Killed(BaseException):  # what SIGKILL looks like to the code: nothing after this line runs
        pass

    def killed(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half")
        raise Killed()

    monkeypatch.setattr(store_module.pq, "write_table", killed)
    monkeypatch.setattr(store_module.Path, "unlink", lambda self, missing_ok=False: None)  # no cleanup ran
    with pytest.raises(Killed):
        store.write_unit_tables("match", "m", "dying", {"pairs": _pairs("dying", 2), "units": _units("dying")})
    monkeypatch.undo()
    stale = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.endswith(TMP_SUFFIX)]
    assert len(stale) == 1 and stale[0].name.startswith(".dying.")
    assert read_table(tmp_path, "pairs").num_rows == 2  # the reader sees only the good unit
    assert store.done_unit_ids() == {"good"}
    assert store.clean_tmp() == 1
    assert _files(tmp_path) == ["results/pairs/probe=match/model=m/good.parquet",
                                "results/units/probe=match/model=m/good.parquet"]


def test_write_text_is_atomic_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path)
    store.write_json("progress.json", {"n": 1})
    replaced: list[tuple[str, str]] = []
    real = store_module.os.replace
    monkeypatch.setattr(store_module.os, "replace", lambda a, b: (replaced.append((str(a), str(b))), real(a, b)))
    store.write_json("progress.json", {"n": 2})
    ((tmp, final),) = replaced
    assert final == str(tmp_path / "progress.json") and tmp != final and tmp.endswith(TMP_SUFFIX)
    assert store.read_json("progress.json") == {"n": 2}
    assert _files(tmp_path) == ["progress.json"]


def test_a_write_failing_before_any_byte_raises_its_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No temp file to clean up: the writer's error comes through, not a missing-file error."""
    def refuse(table, where, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(store_module.pq, "write_table", refuse)
    with pytest.raises(PermissionError, match="read-only file system"):
        RunStore(tmp_path).write_parquet("results/pairs/x/u1.parquet", _pairs("u1", 1))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
