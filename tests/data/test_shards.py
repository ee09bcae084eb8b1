"""Pair shards end to end: make from a messy folder, WebDataset shards and the demo set; read back
through our reader, plain `tar` and `webdataset`; bad images and bad samples reported, never fatal;
CLI exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds

from tests.support.messy_folder import BAD, CLASSES, GOOD, image_bytes, make_messy_folder
from sweep.cli import main as cli_main
from sweep.errors import UserError
from sweep.data.images import Preprocess, decode_image, preprocess
from sweep.data.build import make_demo_shards, make_shards
from sweep.data.shardset import expand_shard_urls
from sweep.data.shards import check_shards, iter_samples, read_pairs
from sweep.data.sources import list_demo, list_folder, list_wds, make_key

GEOMETRY = Preprocess(size=(32, 32))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_messy_folder(tmp_path_factory.mktemp("messy"))


@pytest.fixture(scope="module")
def shard_set(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pairs")
    manifest = make_shards(list_folder(folder), out, pairing="random", pairs=30, seed=7, shard_size=7, workers=0)
    return out, manifest


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _samples(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(out.glob("pairs-*.tar")):
        for name, data in _tar_members(shard).items():
            key, field = name.split(".", 1)
            samples.setdefault(key, {})[field] = data
    return samples


# ----------------------------------------------------------------------------------- making


def test_listing_keys_labels(folder: Path) -> None:
    listing = list_folder(folder)
    by_origin = {c.ref.name: c for c in listing.candidates}
    assert set(by_origin) == GOOD | BAD  # hidden .DS_Store skipped
    assert listing.label_names == dict(enumerate(CLASSES))
    assert by_origin["dog/my.dotted.name.jpg"].key == "dog_my_dotted_name_jpg"
    assert by_origin["cat/photo_a.jpg"].label == 0 and by_origin["large/huge.jpg"].label == 2
    assert by_origin["notes.txt"].label is None
    assert make_key("n01440764/ILSVRC2012_val_00000293.JPEG") == "n01440764_ILSVRC2012_val_00000293_JPEG"
    keys = [c.key for c in listing.candidates]
    assert len(set(keys)) == len(keys) and not any("." in k for k in keys)


def test_manifest_reports_each_bad_file_and_counts(shard_set: tuple[Path, dict]) -> None:
    out, manifest = shard_set
    assert json.loads((out / "manifest.json").read_text()) == manifest
    errors = manifest["errors"]
    assert len(errors) == len(BAD)
    for bad in BAD:
        assert sum(line.startswith(bad + ":") for line in errors) == 1, (bad, errors)
    assert any("empty file" in line for line in errors)
    assert manifest["counts"] == {
        "pairs": 30, "pairs_planned": 30, "shards": 5, "images": len(GOOD), "labels": 3, "errors": len(BAD),
    }
    assert manifest["label_names"] == {"0": "cat", "1": "dog", "2": "large"}
    assert manifest["pairing"]["strategy"] == "random" and manifest["seed"] == 7
    assert [s["name"] for s in manifest["shards"]] == [f"pairs-{i:06d}.tar" for i in range(5)]
    assert sorted(p.name for p in out.glob("*.tar")) == [s["name"] for s in manifest["shards"]]
    assert [s["pairs"] for s in manifest["shards"]] == [7, 7, 7, 7, 2]


def test_samples_hold_original_bytes_and_metadata(folder: Path, shard_set: tuple[Path, dict]) -> None:
    out, _ = shard_set
    samples = _samples(out)
    assert len(samples) == 30
    origins = set()
    for key, fields in samples.items():
        assert "." not in key
        meta = json.loads(fields["json"])
        assert meta["pair_id"] == key and meta["src_key"] != meta["tgt_key"]
        for side in ("src", "tgt"):
            (name,) = [f for f in fields if f.startswith(side + ".")]
            origin = meta[f"{side}_origin"]
            origins.add(origin)
            assert origin in GOOD
            assert fields[name] == (folder / origin).read_bytes()  # untouched bytes
            assert name.split(".")[1] == ("jpg" if origin.endswith(".jpg") else "png")
            label = meta[f"{side}_label"]
            assert isinstance(label, int) and CLASSES[label] == origin.split("/")[0]
            assert meta[f"{side}_label_name"] == origin.split("/")[0]
            w, h = meta[f"{side}_size"]
            with decode_image(fields[name]) as img:
                assert (w, h) == img.size
    assert origins <= GOOD and len(origins) >= 6


def test_same_seed_same_bytes_other_seed_other_pairs(folder: Path, shard_set, tmp_path: Path) -> None:
    out, _ = shard_set
    again = tmp_path / "again"
    make_shards(list_folder(folder), again, pairing="random", pairs=30, seed=7, shard_size=7, workers=0)
    for shard in sorted(out.glob("*.tar")):
        assert (again / shard.name).read_bytes() == shard.read_bytes()
    other = tmp_path / "other"
    make_shards(list_folder(folder), other, pairing="random", pairs=30, seed=8, shard_size=7, workers=0)
    assert _samples(other) != _samples(out)
    with pytest.raises(UserError, match="already holds a shard set"):
        make_shards(list_folder(folder), other, pairs=5, workers=0)


def test_same_class_and_resize(folder: Path, tmp_path: Path) -> None:
    manifest = make_shards(list_folder(folder), tmp_path, pairing="same-class", seed=1, resize=20, workers=1)
    # usable per class: cat 4, dog 3, large 1  ->  4*3 + 3*2 same-class ordered pairs
    assert manifest["counts"]["pairs"] == 18 and manifest["resize"] == 20
    for fields in _samples(tmp_path).values():
        meta = json.loads(fields["json"])
        assert meta["src_label"] == meta["tgt_label"] != 2
        for side in ("src", "tgt"):
            (name,) = [f for f in fields if f.startswith(side + ".")]
            with decode_image(fields[name]) as img:
                original = tuple(meta[f"{side}_size"])
                assert min(img.size) == min(20, min(original))
            assert name.endswith("jpg" if meta[f"{side}_origin"].endswith("jpg") else "png")


def test_wds_source_with_a_bad_member_and_braces(folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good = sorted(GOOD - {"large/huge.jpg"})
    for shard_index in range(2):
        with tarfile.open(src / f"in-{shard_index}.tar", "w") as tar:
            for i, rel in enumerate(good[shard_index::2]):
                ext = rel.rsplit(".", 1)[1]
                key = f"n{shard_index}/img.{i}".replace(".", "_")
                for field, data in ((ext, (folder / rel).read_bytes()), ("cls", str(CLASSES.index(rel.split("/")[0])).encode())):
                    info = tarfile.TarInfo(f"{key}.{field}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            _add(tar, "broken.jpg", b"\xff\xd8 nope!")
    listing = list_wds(str(src / "in-{0..1}.tar"))
    assert len(listing.candidates) == len(good) + 2
    assert set(listing.label_names) == {0, 1}
    out = tmp_path / "out"
    manifest = make_shards(listing, out, pairing="cross-class", pairs=12, workers=0)
    assert manifest["counts"]["pairs"] == 12
    assert len(manifest["errors"]) == 2 and all("broken.jpg" in e for e in manifest["errors"])
    originals = {(folder / rel).read_bytes() for rel in good}
    for fields in _samples(out).values():
        meta = json.loads(fields["json"])
        assert meta["src_label"] != meta["tgt_label"]
        assert {v for k, v in fields.items() if k != "json"} <= originals


def test_wds_source_that_is_compressed_is_reported(folder: Path, tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "a.tar", "w:gz") as tar:
        tar.add(folder / "cat" / "photo_a.jpg", arcname="x.jpg")
    with pytest.raises(UserError, match="not an uncompressed tar"):
        list_wds(str(tmp_path / "a.tar"))


def test_demo_set(tmp_path: Path) -> None:
    listing = list_demo()
    assert len(listing.candidates) == 15 and not listing.errors
    assert len(listing.label_names) == 7
    out = make_demo_shards(tmp_path / "demo", pairs=8, seed=0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["pairs"] == 8 and manifest["errors"] == []
    assert manifest["pairing"]["strategy"] == "cross-class"
    records = list(read_pairs(out, GEOMETRY, workers=0))
    assert len(records) == 8 and all(r.error is None for r in records)
    assert all(r.src_label != r.tgt_label for r in records)
    make_demo_shards(out, pairs=4, seed=1)  # replaces the set already there
    assert len(list(iter_samples(str(out / "pairs-000000.tar")))) == 4


# ----------------------------------------------------------------------------------- reading


@pytest.fixture(scope="module")
def inline_records(shard_set: tuple[Path, dict]) -> list:
    return list(read_pairs(str(shard_set[0]), GEOMETRY, workers=0))


def test_read_pairs_matches_preprocess_exactly(folder: Path, shard_set: tuple[Path, dict], inline_records: list) -> None:
    out, _ = shard_set
    assert len(inline_records) == 30 and all(r.error is None for r in inline_records)
    samples = _samples(out)
    expected: dict[str, torch.Tensor] = {}
    for record in inline_records:
        meta = json.loads(samples[record.pair_id]["json"])
        assert (record.src_key, record.tgt_key) == (meta["src_key"], meta["tgt_key"])
        assert (record.src_label, record.tgt_label) == (meta["src_label"], meta["tgt_label"])
        assert record.shard.endswith(".tar")
        for side in ("src", "tgt"):
            tensor = getattr(record, side)
            assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
            origin = meta[f"{side}_origin"]
            if origin not in expected:
                expected[origin] = preprocess(decode_image((folder / origin).read_bytes()), GEOMETRY)
            assert torch.equal(tensor, expected[origin])


def test_parallel_workers_give_the_same_records(shard_set: tuple[Path, dict], inline_records: list) -> None:
    out, _ = shard_set
    inline = {r.pair_id: r for r in inline_records}
    parallel = list(read_pairs(out, GEOMETRY, workers=2))
    assert sorted(r.pair_id for r in parallel) == sorted(inline)
    for record in parallel:
        assert torch.equal(record.src, inline[record.pair_id].src)
        assert torch.equal(record.tgt, inline[record.pair_id].tgt)
    # one shard, two workers: split by sample, still every pair exactly once
    single = list(read_pairs(str(out / "pairs-000000.tar"), GEOMETRY, workers=2))
    assert sorted(r.pair_id for r in single) == [f"pair_{i:08d}" for i in range(7)]


def test_plain_tar_and_webdataset_read_the_shards(shard_set: tuple[Path, dict]) -> None:
    out, _ = shard_set
    listing = subprocess.run(["tar", "tf", str(out / "pairs-000000.tar")], capture_output=True, text=True, check=True)
    names = listing.stdout.split()
    assert len(names) == 21
    assert {n.split(".", 1)[1].split(".")[0] for n in names} == {"json", "src", "tgt"}
    urls = str(out / "pairs-{000000..000004}.tar")
    dataset = wds.WebDataset(urls, shardshuffle=False).decode("pil")
    count = 0
    for sample in dataset:
        meta = sample["json"]
        assert meta["pair_id"] == sample["__key__"]
        images = [v for k, v in sample.items() if k.startswith(("src.", "tgt."))]
        assert len(images) == 2 and all(im.size == tuple(meta[f"{s}_size"]) for im, s in zip(images, ("src", "tgt")))
        count += 1
    assert count == 30


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture()
def broken_set(tmp_path: Path) -> Path:
    """Shard 0: a good pair, a corrupt image, a missing tgt, bad json, then a truncated member.
    Shard 1: one good pair (reading must get there)."""
    good = image_bytes(1)
    meta = lambda key: json.dumps({"pair_id": key, "src_key": "a", "tgt_key": "b", "src_label": 0, "tgt_label": 1}).encode()  # noqa: E731
    with tarfile.open(tmp_path / "pairs-000000.tar", "w") as tar:
        for key, members in [
            ("ok1", {"json": meta("ok1"), "src.jpg": good, "tgt.jpg": good}),
            ("corrupt", {"json": meta("corrupt"), "src.jpg": b"\xff\xd8\xff garbage", "tgt.jpg": good}),
            ("notgt", {"json": meta("notgt"), "src.jpg": good}),
            ("badjson", {"json": b"{not json", "src.jpg": good, "tgt.jpg": good}),
            ("cut", {"json": meta("cut"), "src.jpg": good, "tgt.jpg": good}),
        ]:
            for field, data in members.items():
                _add(tar, f"{key}.{field}", data)
    raw = (tmp_path / "pairs-000000.tar").read_bytes()
    end = raw.rfind(b"cut.tgt.jpg")  # the last member's header: keep it and half its data
    (tmp_path / "pairs-000000.tar").write_bytes(raw[: end + 512 + len(good) // 2])
    with tarfile.open(tmp_path / "pairs-000001.tar", "w") as tar:
        for field, data in {"json": meta("ok2"), "src.png": image_bytes(2, fmt="PNG"), "tgt.jpg": good}.items():
            _add(tar, f"ok2.{field}", data)
    return tmp_path


def test_bad_samples_become_error_records(broken_set: Path) -> None:
    for workers in (0, 2):
        records = {r.pair_id: r for r in read_pairs(broken_set, GEOMETRY, workers=workers)}
        assert set(records) == {"ok1", "corrupt", "notgt", "badjson", "cut", "ok2"}
        assert records["ok1"].error is None and records["ok2"].error is None
        assert records["ok2"].src.shape == (3, 32, 32)
        expectations = {
            "corrupt": "corrupt.src.jpg: not a readable image",
            "notgt": "notgt: missing field 'tgt",
            "badjson": "badjson: unreadable json",
            "cut": "truncated or corrupt tar at sample 'cut'",
        }
        for key, text in expectations.items():
            record = records[key]
            assert text in record.error and "\n" not in record.error, record.error
            assert record.src is None and record.tgt is None
        assert records["corrupt"].src_key == "a" and records["corrupt"].tgt_label == 1


def test_check_reports_good_and_bad_sets(shard_set: tuple[Path, dict], broken_set: Path) -> None:
    out, _ = shard_set
    report = check_shards(str(out), workers=0)
    assert (report.pairs, report.pairs_ok, report.errors) == (30, 30, [])
    assert report.labels == {0, 1, 2} and len(report.source_errors) == len(BAD)
    bad = check_shards(str(broken_set), workers=0)
    assert bad.pairs == 6 and bad.pairs_ok == 2
    assert len(bad.errors) == 5  # four bad samples + no manifest.json


def test_expand_shard_urls(shard_set: tuple[Path, dict], tmp_path: Path) -> None:
    out, manifest = shard_set
    names = [s["name"] for s in manifest["shards"]]
    assert [Path(u).name for u in expand_shard_urls(str(out))] == names
    assert [Path(u).name for u in expand_shard_urls(str(out / "pairs-*.tar"))] == names
    assert len(expand_shard_urls(str(out / "pairs-{000000..000002}.tar"))) == 3
    assert expand_shard_urls([str(out / names[0]), str(out / names[1])])[1].endswith(names[1])
    assert expand_shard_urls(f"file://{out}/pairs-000000.tar") == [f"file://{out}/pairs-000000.tar"]
    for bad in (str(tmp_path / "nothing"), str(tmp_path), str(out / "x-{0..1}.tar"), str(out / "zz*.tar")):
        with pytest.raises(UserError):
            expand_shard_urls(bad)


# ----------------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", "shards", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_cli_make_and_check(
    folder: Path, tmp_path: Path, broken_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    made = _cli("make", "--from-folder", str(folder), "--out", str(out), "--pairing", "cross-class",
                "--pairs", "10", "--shard-size", "4", "--workers", "0")
    assert made.returncode == 0, made.stderr
    assert "wrote 10 cross-class pairs of 8 images" in made.stdout
    assert sum(line.startswith("skipped: ") for line in made.stderr.splitlines()) == len(BAD)
    assert len(list(out.glob("pairs-*.tar"))) == 3
    assert cli_main(["shards", "check", str(out), "--workers", "0"]) == 0
    assert "10 pairs, 10 ok, 0 error(s)" in capsys.readouterr().out
    broken = _cli("check", str(broken_set), "--workers", "0")
    assert broken.returncode == 1
    assert sum(line.startswith("error: ") for line in broken.stdout.splitlines()) == 5


def test_cli_unusable_input_is_one_line_exit_2(folder: Path, tmp_path: Path) -> None:
    singles = tmp_path / "singles"
    for name in ("a", "b"):
        (singles / name).mkdir(parents=True)
        (singles / name / "x.png").write_bytes(image_bytes(3, fmt="PNG"))
    result = _cli("make", "--from-folder", str(singles), "--out", str(tmp_path / "o"), "--pairing", "same-class", "--workers", "0")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "same-class pairing needs a class" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["make", "--from-folder", "{missing}", "--out", "{out}"], "no such folder"),
        (["make", "--from-folder", "{empty}", "--out", "{out}"], "holds no files"),
        (["make", "--from-folder", "{bad_only}", "--out", "{out}", "--workers", "0"], "no readable images"),
        (["make", "--demo", "--out", "{out}", "--pairing", "all", "--pairs", "3"], "does not apply"),
        (["make", "--demo", "--out", "{out}", "--pairing", "fixed-target", "--target", "nope"], "no usable image has key"),
        (["check", "{missing}"], "no such"),
        (["check", "{empty}"], "no .tar shards"),
    ],
)
def test_cli_errors_in_process(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad_only").mkdir()
    (tmp_path / "bad_only" / "x.jpg").write_bytes(b"no")
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "bad_only": tmp_path / "bad_only", "out": tmp_path / "out"}
    status = cli_main(["shards", *(a.format(**paths) for a in args)])
    err = capsys.readouterr().err
    assert status == 2
    lines = [line for line in err.splitlines() if line.startswith("vitsweep shards: error:")]
    assert len(lines) == 1 and message in lines[0], err
