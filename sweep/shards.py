"""WebDataset pair shards: write them, read them for the engine, validate them.

A shard set is a folder of `pairs-000000.tar`, `pairs-000001.tar`, ... and a `manifest.json`.
Each sample is one (source, target) pair:

    pair_00000042.json      {"pair_id", "src_key", "tgt_key", "src_label", "tgt_label",
                             "src_label_name", "tgt_label_name", "src_size": [w, h],
                             "tgt_size": [w, h], "src_origin", "tgt_origin"}
    pair_00000042.src.jpg   the source image's original encoded bytes (png, jpg, ... as it was)
    pair_00000042.tgt.png   the target's

The manifest is written last, so a folder without one was not finished. Readers never stop on
a bad sample: a corrupt image, a missing field or a truncated tar becomes a `PairRecord` with
`error` set (one line: key and reason) and reading goes on.

    make_shards(list_folder("val"), "shards/val", pairing="cross-class", pairs=50_000)
    for record in read_pairs("shards/val", Preprocess((224, 224)), workers=2): ...
    report = check_shards("shards/val")
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import torch
from braceexpand import braceexpand
from PIL import Image
from tqdm import tqdm
from webdataset import TarWriter
from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext

from sweep.errors import UserError
from sweep.images import ImageDecodeError, Preprocess, decode_image
from sweep.pairing import PairPlan, plan_pairs
from sweep.sources import (
    ImageRef,
    Listing,
    SourceImage,
    list_demo,
    parallel_map,
    process_context,
    read_ref,
    verify_images,
)

MANIFEST = "manifest.json"
SHARD_PATTERN = "pairs-{:06d}.tar"
FORMAT = "vitsweep-pairs"
FORMAT_VERSION = 1
DEMO_PAIRS = 16
_TAR_MTIME = 0.0  # fixed member times: the same inputs and seed give byte-identical shards


def pair_key(index: int) -> str:
    """The sample key (and pair_id) of the index-th pair written; no dots, sorts in order."""
    return f"pair_{index:08d}"


# ----------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _PairJob:
    index: int
    src: SourceImage
    tgt: SourceImage
    src_label_name: str | None
    tgt_label_name: str | None
    resize: int | None


def _encode_side(image: SourceImage, resize: int | None) -> tuple[str, bytes]:
    data = read_ref(image.ref)
    if resize is None or min(image.width, image.height) <= resize:
        return image.ext, data  # the original bytes, untouched
    img = decode_image(data, image.ref.name)
    scale = resize / min(img.width, img.height)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    buffer = io.BytesIO()
    if image.ext == "jpg":
        img.save(buffer, format="JPEG", quality=95)
        return "jpg", buffer.getvalue()
    img.save(buffer, format="PNG")
    return "png", buffer.getvalue()


def _build_sample(job: _PairJob) -> dict[str, Any] | str:
    """The tar sample of one pair, or an error line if an image can no longer be read."""
    try:
        src_ext, src_bytes = _encode_side(job.src, job.resize)
        tgt_ext, tgt_bytes = _encode_side(job.tgt, job.resize)
    except ImageDecodeError as err:
        return str(err)
    except OSError as err:
        return f"pair {job.src.key} -> {job.tgt.key}: cannot read image ({' '.join(str(err).split())})"
    key = pair_key(job.index)
    meta = {
        "pair_id": key,
        "src_key": job.src.key,
        "tgt_key": job.tgt.key,
        "src_label": job.src.label,
        "tgt_label": job.tgt.label,
        "src_label_name": job.src_label_name,
        "tgt_label_name": job.tgt_label_name,
        "src_size": [job.src.width, job.src.height],
        "tgt_size": [job.tgt.width, job.tgt.height],
        "src_origin": job.src.ref.name,
        "tgt_origin": job.tgt.ref.name,
    }
    return {
        "__key__": key,
        f"src.{src_ext}": src_bytes,
        f"tgt.{tgt_ext}": tgt_bytes,
        "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
    }


class _ShardSink:
    """Writes samples to pairs-NNNNNN.tar files of at most `shard_size` samples each."""

    def __init__(self, out_dir: Path, shard_size: int) -> None:
        self.out_dir, self.shard_size = out_dir, shard_size
        self.shards: list[dict[str, Any]] = []
        self._writer: TarWriter | None = None
        self._stream: Any = None

    def write(self, sample: dict[str, Any]) -> None:
        if self._writer is None or self.shards[-1]["pairs"] >= self.shard_size:
            self._close()
            name = SHARD_PATTERN.format(len(self.shards))
            self._stream = open(self.out_dir / name, "wb")
            self._writer = TarWriter(self._stream, mtime=_TAR_MTIME, user="vitsweep", group="vitsweep")
            self.shards.append({"name": name, "pairs": 0, "bytes": 0})
        self._writer.write(sample)
        self.shards[-1]["pairs"] += 1

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._stream.close()
            self.shards[-1]["bytes"] = (self.out_dir / self.shards[-1]["name"]).stat().st_size
            self._writer = None

    def close(self) -> list[dict[str, Any]]:
        self._close()
        return self.shards


def _prepare_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    old = [out_dir / MANIFEST] if (out_dir / MANIFEST).exists() else []
    old += sorted(out_dir.glob("pairs-*.tar"))
    if old and not force:
        raise UserError(f"{out_dir} already holds a shard set ({old[0].name}); choose another --out or pass --force")
    for path in old:
        path.unlink()


def make_shards(
    listing: Listing,
    out_dir: str | Path,
    *,
    pairing: str = "random",
    pairs: int | None = None,
    seed: int = 0,
    shard_size: int = 1000,
    resize: int | None = None,
    target: str | None = None,
    workers: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Verify a source's images, pair them, write the shards and the manifest; returns the manifest.

    Bad images are listed in the manifest's `errors` and never paired. Streams: only the image
    list is held; each pair's two files are read when that pair is written.
    """
    if shard_size < 1:
        raise UserError(f"--shard-size must be at least 1 (got {shard_size})")
    if resize is not None and resize < 1:
        raise UserError(f"--resize must be a positive number of pixels (got {resize})")
    out = Path(out_dir)
    started = time.time()
    with _bar(progress, len(listing.candidates), "checking images") as bar:
        images, errors = verify_images(listing, workers, bar.update)
    if not images:
        first = f" (first: {errors[0]})" if errors else ""
        raise UserError(f"no readable images in {listing.location}: {len(errors)} bad file(s){first}")
    plan = plan_pairs([(im.key, im.label) for im in images], pairing, pairs, seed, target)
    _prepare_out_dir(out, force)
    verified = time.time()

    names = listing.label_names
    jobs = (
        _PairJob(index, images[s], images[t], names.get(images[s].label), names.get(images[t].label), resize)  # type: ignore[arg-type]
        for index, (s, t) in enumerate(plan)
    )
    sink = _ShardSink(out, shard_size)
    # Copying bytes is I/O: inline. Re-encoding (--resize) is CPU work: worker processes.
    samples = parallel_map(_build_sample, jobs, workers if resize else 0)
    written = 0
    with _bar(progress, plan.count, "writing pairs") as bar:
        for sample in samples:
            if isinstance(sample, str):
                errors.append(sample)
            else:
                sink.write(sample)
                written += 1
            bar.update(1)
    shards = sink.close()
    timing = {"verify_s": round(verified - started, 3), "write_s": round(time.time() - verified, 3)}
    manifest = _manifest(listing, images, errors, plan, written, shards, seed, resize, timing)
    _write_json_atomic(out / MANIFEST, manifest)
    return manifest


def _manifest(
    listing: Listing,
    images: Sequence[SourceImage],
    errors: list[str],
    plan: PairPlan,
    written: int,
    shards: list[dict[str, Any]],
    seed: int,
    resize: int | None,
    timing: dict[str, float],
) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("vitsweep")
    except PackageNotFoundError:
        package_version = "?"
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vitsweep": package_version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "timing": timing,
        "source": {**listing.describe(), "images_usable": len(images)},
        "pairing": plan.describe(),
        "seed": seed,
        "resize": resize,
        "counts": {
            "pairs": written,
            "pairs_planned": plan.count,
            "shards": len(shards),
            "images": len(images),
            "labels": len(listing.label_names),
            "errors": len(errors),
        },
        "label_names": {str(index): name for index, name in sorted(listing.label_names.items())},
        "shards": shards,
        "errors": errors,
    }


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def make_demo_shards(
    out_dir: str | Path,
    pairs: int | None = DEMO_PAIRS,
    seed: int = 0,
    shard_size: int = 1000,
    pairing: str = "cross-class",
    workers: int | None = 0,
) -> Path:
    """The built-in demo shard set (scikit-image's photographs, see sweep.sources.DEMO_IMAGES),
    replacing any shard set already in `out_dir`. Returns the folder."""
    make_shards(
        list_demo(), out_dir, pairing=pairing, pairs=pairs, seed=seed,
        shard_size=shard_size, workers=workers, force=True,
    )
    return Path(out_dir)


def _bar(enabled: bool, total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="img" if "image" in desc else "pair", disable=None if enabled else True,
                leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------------- reading


@dataclass
class PairRecord:
    """One pair read from a shard; `error` set => src/tgt are None and the rest is best effort."""

    pair_id: str
    src_key: str | None
    tgt_key: str | None
    src_label: int | None
    tgt_label: int | None
    src: torch.Tensor | None  # (3, H, W) float32 in [0, 1]
    tgt: torch.Tensor | None
    error: str | None
    shard: str


def expand_shard_urls(spec: str | Sequence[str]) -> list[str]:
    """Shard URLs from a folder (its manifest's list, else its *.tar), a glob, a brace pattern
    ("data/pairs-{000000..000009}.tar"), or any fsspec URL (s3://...). UserError if none."""
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    urls: list[str] = []
    for item in specs:
        item = os.fspath(item)
        expanded = list(braceexpand(item))
        if len(expanded) > 1:
            for url in expanded:  # trusted as files: no per-shard round trip for remote URLs
                if "://" not in url and not url.startswith("pipe:") and not os.path.exists(url):
                    raise UserError(f"no such shard: {url}")
            urls.extend(expanded)
        else:
            urls.extend(_expand_one(item))
    if not urls:
        raise UserError(f"no shards found at {spec}")
    return urls


def _expand_one(url: str) -> list[str]:
    if url.startswith("pipe:"):
        return [url]
    fs, path = fsspec.core.url_to_fs(url)
    local = "://" not in url

    def as_url(p: str) -> str:
        return p if local else fs.unstrip_protocol(p)

    if any(ch in path for ch in "*?["):
        found = sorted(fs.glob(path))
        if not found:
            raise UserError(f"no shards match {url}")
        return [as_url(p) for p in found]
    if fs.isdir(path):
        manifest = path.rstrip("/") + "/" + MANIFEST
        if fs.exists(manifest):
            try:
                with fs.open(manifest, "rb") as f:
                    names = [s["name"] for s in json.load(f)["shards"]]
                return [as_url(path.rstrip("/") + "/" + n) for n in names]
            except (ValueError, KeyError, TypeError):
                pass  # a damaged manifest: fall back to the folder's tar files
        found = sorted(fs.glob(path.rstrip("/") + "/*.tar"))
        if not found:
            raise UserError(f"no .tar shards in {url}")
        return [as_url(p) for p in found]
    if not fs.exists(path):
        raise UserError(f"no such shard: {url}")
    return [url]


def _open_stream(url: str) -> Any:
    if url.startswith("pipe:"):
        return gopen(url, "rb")
    return fsspec.open(url, "rb").open()


def iter_samples(url: str) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard, as dicts {"__key__", "__url__", "json": bytes, "src.jpg": bytes, ...},
    grouped by key as WebDataset does. A sample that cannot be read completely carries
    "__error__" (one line) instead of stopping the iteration; after a truncated tar the
    shard ends there."""
    try:
        stream = _open_stream(url)
    except (OSError, ValueError) as err:
        yield {"__key__": None, "__url__": url, "__error__": f"{url}: cannot open shard ({_one_line(err)})"}
        return
    sample: dict[str, Any] | None = None
    try:
        with stream:
            tar = tarfile.open(fileobj=stream, mode="r|*")
            for info in tar:
                if not info.isreg():
                    continue
                key, ext = base_plus_ext(info.name)
                if key is None:
                    continue
                if sample is not None and sample["__key__"] != key:
                    yield sample
                    sample = None
                if sample is None:
                    sample = {"__key__": key, "__url__": url}
                member = tar.extractfile(info)
                data = member.read() if member is not None else b""
                if len(data) != info.size:
                    raise tarfile.ReadError("unexpected end of data")
                ext = ext.lower()
                if ext in sample:
                    sample.setdefault("__error__", f"{key}: duplicate field {ext!r} in {url}")
                sample[ext] = data
                tar.members = []
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        where = f"sample {sample['__key__']!r}" if sample else "a sample header"
        reason = f"{url}: truncated or corrupt tar at {where} ({_one_line(err)})"
        if sample is None:
            sample = {"__key__": None, "__url__": url}
        sample["__error__"] = reason
    if sample is not None:
        yield sample


def _image_field(sample: dict[str, Any], side: str) -> tuple[str, bytes] | None:
    for name, value in sample.items():
        if name.startswith(side + ".") and isinstance(value, bytes):
            return name, value
    return None


@dataclass(frozen=True)
class _Meta:
    pair_id: str
    src_key: str | None = None
    tgt_key: str | None = None
    src_label: int | None = None
    tgt_label: int | None = None


def _parse_meta(sample: dict[str, Any]) -> tuple[_Meta, str | None]:
    key = sample.get("__key__") or f"{os.path.basename(sample['__url__'])}:unknown"
    if "__error__" in sample:
        return _Meta(key), sample["__error__"]
    if "json" not in sample:
        return _Meta(key), f"{key}: missing field 'json'"
    try:
        meta = json.loads(sample["json"])
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as err:
        return _Meta(key), f"{key}: unreadable json ({_one_line(err)})"
    labels = {}
    for side in ("src_label", "tgt_label"):
        value = meta.get(side)
        labels[side] = value if isinstance(value, int) and not isinstance(value, bool) else None
    result = _Meta(str(meta.get("pair_id") or key), meta.get("src_key"), meta.get("tgt_key"), **labels)
    for side in ("src", "tgt"):
        if _image_field(sample, side) is None:
            return result, f"{key}: missing field '{side}.<jpg|png|...>'"
    return result, None


class _Decoder:
    """sample -> PairRecord; equivalent to sweep.images.decode_image + preprocess, with the
    transform built once per worker instead of once per image."""

    def __init__(self, geometry: Preprocess | None) -> None:
        self.transform = geometry.transform() if geometry is not None else None

    def __call__(self, sample: dict[str, Any]) -> PairRecord:
        meta, error = _parse_meta(sample)
        shard = sample["__url__"]
        tensors: dict[str, torch.Tensor | None] = {"src": None, "tgt": None}
        if error is None:
            try:
                for side in ("src", "tgt"):
                    name, data = _image_field(sample, side)  # type: ignore[misc]
                    img = decode_image(data, f"{sample['__key__']}.{name}")
                    if self.transform is not None:
                        tensors[side] = self.transform(img).clamp_(0.0, 1.0)
            except ImageDecodeError as err:
                error, tensors = str(err), {"src": None, "tgt": None}
        return PairRecord(
            meta.pair_id, meta.src_key, meta.tgt_key, meta.src_label, meta.tgt_label,
            tensors["src"], tensors["tgt"], error, shard,
        )


class _PairDataset(torch.utils.data.IterableDataset):
    """Shards split across DataLoader workers: whole shards when there are enough of them,
    else every worker streams every shard and decodes every n-th sample."""

    def __init__(self, urls: list[str], geometry: Preprocess | None) -> None:
        super().__init__()
        self.urls, self.geometry = urls, geometry

    def __iter__(self) -> Iterator[PairRecord]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        decode = _Decoder(self.geometry)
        if len(self.urls) >= workers:
            for url in self.urls[worker::workers]:
                for sample in iter_samples(url):
                    yield decode(sample)
            return
        position = 0
        for url in self.urls:
            for sample in iter_samples(url):
                if position % workers == worker:
                    yield decode(sample)
                position += 1


@dataclass
class _Batch:
    """Records sent from a worker together: the tensors of its good records stacked into one
    shared-memory block per side (one hand-over per batch instead of two per pair)."""

    records: list[PairRecord]
    src: torch.Tensor | None  # (k, 3, H, W) for the k records without error, in order
    tgt: torch.Tensor | None


_BATCH = 8


def _batched(records: Iterator[PairRecord], size: int = _BATCH) -> Iterator[_Batch]:
    def pack(chunk: list[PairRecord]) -> _Batch:
        good = [r for r in chunk if r.src is not None and r.tgt is not None]
        # default_collate stacks straight into shared memory when called in a DataLoader worker
        src = torch.utils.data.default_collate([r.src for r in good]) if good else None
        tgt = torch.utils.data.default_collate([r.tgt for r in good]) if good else None
        for record in good:
            record.src = record.tgt = None
        return _Batch(chunk, src, tgt)

    chunk: list[PairRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield pack(chunk)
            chunk = []
    if chunk:
        yield pack(chunk)


class _BatchedDataset(torch.utils.data.IterableDataset):
    def __init__(self, dataset: _PairDataset) -> None:
        super().__init__()
        self.dataset = dataset

    def __iter__(self) -> Iterator[_Batch]:
        return _batched(iter(self.dataset))


def _unbatch(batch: _Batch) -> Iterator[PairRecord]:
    index = 0
    for record in batch.records:
        if record.error is None and batch.src is not None and batch.tgt is not None:
            record.src, record.tgt = batch.src[index], batch.tgt[index]
            index += 1
        yield record


def _identity(batch: _Batch) -> _Batch:
    return batch


def _records(urls: list[str], geometry: Preprocess | None, workers: int) -> Iterator[PairRecord]:
    dataset = _PairDataset(urls, geometry)
    if workers <= 0 or multiprocessing.current_process().daemon:
        with _single_torch_thread():
            # decoding one image is too small a job for intra-op threads; they only contend
            yield from dataset
        return
    loader = torch.utils.data.DataLoader(
        _BatchedDataset(dataset),
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        multiprocessing_context=process_context(),
        prefetch_factor=2,
    )
    for batch in loader:
        yield from _unbatch(batch)


class _single_torch_thread:
    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.threads)


def read_pairs(urls: str | Sequence[str], geometry: Preprocess, workers: int = 2) -> Iterator[PairRecord]:
    """PairRecords of every sample in the shards, decoded and resized to `geometry`, decoded in
    `workers` processes (0: in this process). Bad samples come back with `error` set."""
    yield from _records(expand_shard_urls(urls), geometry, workers)


# ----------------------------------------------------------------------------------- checking


@dataclass
class CheckReport:
    """What `check_shards` found: counts, and one line per problem."""

    location: str
    shards: list[str]
    pairs: int = 0
    pairs_ok: int = 0
    labels: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @property
    def source_errors(self) -> list[str]:
        """Files skipped when the set was made (not errors of the shards themselves)."""
        return list((self.manifest or {}).get("errors", []))


def check_shards(
    location: str | Sequence[str], workers: int = 2, progress: Callable[[int], None] | None = None
) -> CheckReport:
    """Read every sample, decode every image (no resize), and compare with the manifest."""
    manifest, manifest_error = _load_manifest(location)
    urls = expand_shard_urls(location)
    report = CheckReport(location if isinstance(location, str) else " ".join(location), urls, manifest=manifest)
    if manifest_error:
        report.errors.append(manifest_error)
    seen: set[str] = set()
    per_shard: dict[str, int] = {url: 0 for url in urls}
    for record in _records(urls, None, workers):
        report.pairs += 1
        per_shard[record.shard] = per_shard.get(record.shard, 0) + 1
        if record.error:
            report.errors.append(record.error)
        else:
            report.pairs_ok += 1
            report.labels.update(x for x in (record.src_label, record.tgt_label) if x is not None)
        if record.pair_id in seen:
            report.errors.append(f"{record.pair_id}: duplicate pair_id (in {record.shard})")
        seen.add(record.pair_id)
        if progress:
            progress(1)
    if manifest:
        report.errors.extend(_compare_manifest(manifest, per_shard, report.pairs))
    return report


def _load_manifest(location: str | Sequence[str]) -> tuple[dict[str, Any] | None, str | None]:
    if not isinstance(location, (str, os.PathLike)) or "://" in str(location):
        return None, None
    path = Path(location) / MANIFEST
    if not Path(location).is_dir():
        if not any(ch in str(location) for ch in "*?[{") and not Path(location).exists():
            raise UserError(f"no such folder or shard: {location}")
        return None, None
    if not path.exists():
        return None, f"{location}: no {MANIFEST} (an unfinished or foreign shard set)"
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        return manifest, None
    except (ValueError, UnicodeDecodeError) as err:
        return None, f"{path}: unreadable manifest ({_one_line(err)})"


def _compare_manifest(manifest: dict[str, Any], per_shard: dict[str, int], pairs: int) -> list[str]:
    problems = []
    expected = manifest.get("counts", {}).get("pairs")
    if expected is not None and expected != pairs:
        problems.append(f"manifest: says {expected} pairs, shards hold {pairs}")
    found = {os.path.basename(url): count for url, count in per_shard.items()}
    for shard in manifest.get("shards", []):
        name, want = shard.get("name"), shard.get("pairs")
        if name in found and want is not None and found[name] != want:
            problems.append(f"{name}: manifest says {want} pairs, shard holds {found[name]}")
    return problems


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


__all__ = [
    "MANIFEST",
    "CheckReport",
    "PairRecord",
    "check_shards",
    "expand_shard_urls",
    "iter_samples",
    "make_demo_shards",
    "make_shards",
    "pair_key",
    "read_pairs",
]
