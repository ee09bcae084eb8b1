"""Build pair shard sets: list a source, verify its images, plan the pairs, write the tar shards
and their manifest (written last, so a folder without one was not finished).

    make_shards(list_folder("val"), "shards/val", pairing="cross-class", pairs=50_000)
    make_demo_shards("shards/demo")
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm
from webdataset import TarWriter

from sweep.data.images import ImageDecodeError, decode_image
from sweep.data.pairing import PairPlan, plan_pairs
from sweep.data.parallel import parallel_map
from sweep.data.shardset import MANIFEST
from sweep.data.shards import FORMAT, FORMAT_VERSION, SHARD_PATTERN, pair_key
from sweep.data.sources import Listing, SourceImage, list_demo, read_ref, verify_images
from sweep.errors import UserError, one_line
from sweep.files import atomic_write

DEMO_PAIRS = 16
_TAR_MTIME = 0.0  # fixed member times: the same inputs and seed give byte-identical shards



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
        return f"pair {job.src.key} -> {job.tgt.key}: cannot read image ({one_line(err)})"
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
    list is held; each pair's two files are read when that pair is written. `out_dir` may be an
    fsspec URL (s3://bucket/prefix): the set is built in a local temporary folder, then uploaded,
    the manifest last.
    """
    if "://" in str(out_dir):
        return _make_remote(str(out_dir), force, lambda local: make_shards(
            listing, local, pairing=pairing, pairs=pairs, seed=seed, shard_size=shard_size, resize=resize,
            target=target, workers=workers, force=True, progress=progress))
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
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _make_remote(url: str, force: bool, build: Any) -> dict[str, Any]:
    """Build a shard set locally with `build(folder)` and upload it to `url` (shards, then manifest)."""
    import tempfile

    import fsspec

    url = url.rstrip("/")
    try:
        fs, base = fsspec.core.url_to_fs(url)
        old = [p for p in fs.glob(f"{base}/pairs-*.tar")] + ([f"{base}/{MANIFEST}"] if fs.exists(f"{base}/{MANIFEST}") else [])
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {url}: {one_line(err)}") from None
    if old and not force:
        raise UserError(f"{url} already holds a shard set ({old[0].rsplit('/', 1)[-1]}); choose another --out or pass --force")
    with tempfile.TemporaryDirectory(prefix="vitsweep-shards-") as local:
        manifest = build(local)
        try:
            for path in old:
                fs.rm_file(path)
            names = [s["name"] for s in manifest["shards"]] + [MANIFEST]
            for name in names:
                fs.put_file(str(Path(local) / name), f"{base}/{name}")
        except (OSError, ValueError) as err:
            raise UserError(f"cannot write to {url}: {one_line(err)}") from None
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


def make_demo_shards(
    out_dir: str | Path,
    pairs: int | None = DEMO_PAIRS,
    seed: int = 0,
    shard_size: int = 1000,
    pairing: str = "cross-class",
    workers: int | None = 0,
) -> Path:
    """The built-in demo shard set (scikit-image's photographs, see sweep.data.sources.DEMO_IMAGES),
    replacing any shard set already in `out_dir`. Returns the folder."""
    make_shards(
        list_demo(), out_dir, pairing=pairing, pairs=pairs, seed=seed,
        shard_size=shard_size, workers=workers, force=True,
    )
    return Path(out_dir)


def _bar(enabled: bool, total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="img" if "image" in desc else "pair", disable=None if enabled else True,
                leave=False, dynamic_ncols=True)
