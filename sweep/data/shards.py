"""The WebDataset pair-shard format: read shards for the engine and validate them (building a
set is `sweep.data.build`).

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

    for record in read_pairs("shards/val", Preprocess((224, 224)), workers=2): ...
    report = check_shards("shards/val")
"""


from __future__ import annotations

import json
import tarfile
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import torch
from webdataset.gopen import gopen

from sweep.data.images import ImageDecodeError, Preprocess, decode_image
from sweep.data.parallel import process_context
from sweep.data.shardset import MANIFEST, ShardSet, expand_shard_urls
from sweep.data.tars import TAR_ERRORS, TarGroup, member_bytes, tar_groups
from sweep.errors import UserError, one_line

SHARD_PATTERN = "pairs-{:06d}.tar"
FORMAT = "vitsweep-pairs"
FORMAT_VERSION = 1


def pair_key(index: int) -> str:
    """The sample key (and pair_id) of the index-th pair written; no dots, sorts in order."""
    return f"pair_{index:08d}"



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
        yield {"__key__": None, "__url__": url, "__error__": f"{url}: cannot open shard ({one_line(err)})"}
        return
    try:
        with stream:
            for group in tar_groups(tarfile.open(fileobj=stream, mode="r|*"), read=member_bytes):
                yield _sample(url, group)
    except TAR_ERRORS as err:  # the tar's first header, or closing the stream
        yield _sample(url, TarGroup(None, error=err))


def _sample(url: str, group: TarGroup) -> dict[str, Any]:
    sample: dict[str, Any] = {"__key__": group.key, "__url__": url, **group.members}
    if group.duplicate is not None:
        sample["__error__"] = f"{group.key}: duplicate field {group.duplicate!r} in {url}"
    if group.error is not None:
        where = f"sample {group.key!r}" if group.key is not None else "a sample header"
        sample["__error__"] = f"{url}: truncated or corrupt tar at {where} ({one_line(group.error)})"
    return sample


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
        return _Meta(key), f"{key}: unreadable json ({one_line(err)})"
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
    """sample -> PairRecord; equivalent to sweep.data.images.decode_image + preprocess, with the
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
    shards = ShardSet(location)
    manifest, manifest_error = _local_manifest(shards)
    urls = shards.urls
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


def _local_manifest(shards: ShardSet) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, problem) of a local folder; (None, None) for anything else, which is not compared."""
    location = shards.location
    if not isinstance(location, str) or "://" in location:
        return None, None
    if not Path(location).is_dir():
        if not any(ch in location for ch in "*?[{") and not Path(location).exists():
            raise UserError(f"no such folder or shard: {location}")
        return None, None
    problem = shards.check_manifest()
    return shards.manifest, problem


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


__all__ = [
    "MANIFEST",
    "CheckReport",
    "PairRecord",
    "check_shards",
    "expand_shard_urls",
    "iter_samples",
    "pair_key",
    "read_pairs",
]
