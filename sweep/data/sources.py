"""Image sources for pair shards: an image folder, ImageNet-style WebDataset shards, or the demo set.

A source is *listed* (keys, labels and where each image's bytes live; no bytes are held), then
*verified* (every image read and decoded once, in worker processes, one image at a time), and
the writer re-reads the bytes of each image when a pair needs it. Memory therefore grows with
the number of images listed (a few hundred bytes each), never with the image bytes or the
number of pairs.

    listing = list_folder("imagenet/val")          # or list_wds("s3://b/in-{0000..0063}.tar"), list_demo()
    images, errors = verify_images(listing, workers=2)
    data = read_ref(images[0].ref)                  # the original encoded bytes
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from PIL import Image, UnidentifiedImageError

from sweep.data.images import ImageDecodeError
from sweep.data.parallel import parallel_map
from sweep.data.shardset import expand_shard_urls
from sweep.data.tars import tar_groups
from sweep.errors import UserError, one_line

Image.MAX_IMAGE_PIXELS = 200_000_000  # same limit as sweep.data.images

# Pillow format -> the extension a pair sample stores the original bytes under.
FORMAT_EXT: dict[str, str] = {
    "JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif",
}
WDS_IMAGE_EXTS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")

# The demo set: photographs scikit-image ships inside its package (no download), with a class
# name each. Several share a class so that same-class pairs exist.
DEMO_IMAGES: tuple[tuple[str, str, str], ...] = (
    ("astronaut.png", "person", "astronaut Eileen Collins, colour portrait"),
    ("camera.png", "person", "man with a camera on a tripod, grayscale"),
    ("chelsea.png", "animal", "Chelsea the cat, colour"),
    ("horse.png", "animal", "horse, black silhouette on transparent background"),
    ("coffee.png", "object", "cup of coffee on a saucer, colour"),
    ("coins.png", "object", "Greek coins, grayscale"),
    ("rocket.jpg", "vehicle", "rocket on its launch pad, colour"),
    ("motorcycle_left.png", "vehicle", "motorcycle, colour (left image of a stereo pair)"),
    ("brick.png", "texture", "brick wall, grayscale"),
    ("grass.png", "texture", "grass, grayscale"),
    ("gravel.png", "texture", "gravel, grayscale"),
    ("moon.png", "space", "surface of the moon, grayscale"),
    ("hubble_deep_field.jpg", "space", "Hubble deep field galaxies, colour"),
    ("ihc.png", "microscopy", "immunohistochemistry tissue stain, colour"),
    ("cell.png", "microscopy", "cell under a microscope, grayscale"),
)

_KEY_UNSAFE = re.compile(r"[./\\\s]+")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where one image's encoded bytes live: a whole file, or a byte range inside a tar."""

    location: str  # local path or fsspec URL
    name: str  # human-readable origin for errors and the pair json (relative path, url#member)
    offset: int = -1  # start of the member's data inside a tar; -1 = the whole file
    size: int = -1


@dataclass(frozen=True, slots=True)
class Candidate:
    """A listed image, not yet read."""

    key: str
    label: int | None
    ref: ImageRef


@dataclass(frozen=True, slots=True)
class SourceImage:
    """A verified image: decodes, and its original format and size are known."""

    key: str
    label: int | None
    ref: ImageRef
    ext: str
    width: int
    height: int


@dataclass
class Listing:
    """What a source holds, before any image is read."""

    kind: str  # "folder" | "wds" | "demo"
    location: str
    label_names: dict[int, str]
    candidates: list[Candidate]
    errors: list[str] = field(default_factory=list)  # problems found while listing

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location, "images_listed": len(self.candidates)}


def make_key(relative: str) -> str:
    """A WebDataset-safe key from a relative path: dots, separators and spaces become '_'."""
    return _KEY_UNSAFE.sub("_", relative).strip("_") or "image"


class _KeyMaker:
    """Keys from relative paths, made unique by a numeric suffix where two paths collide."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, relative: str) -> str:
        key = base = make_key(relative)
        suffix = 1
        while key in self._seen:
            suffix += 1
            key = f"{base}_{suffix}"
        self._seen.add(key)
        return key


# ----------------------------------------------------------------------------------- listing


def list_folder(path: str | Path) -> Listing:
    """An image folder, flat or with one sub-folder per class (the folder name is the label).

    Files directly in the top folder of a class-structured tree are listed unlabelled.
    Hidden files and folders (".name") are skipped; every other file is a candidate, so a
    stray text file is reported as unreadable rather than silently ignored.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"no such folder: {root}")
    if not root.is_dir():
        raise UserError(f"not a folder: {root}")
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            if not name.startswith("."):
                files.append(name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/"))
    if not files:
        raise UserError(f"folder {root} holds no files")
    classes = sorted({rel.split("/", 1)[0] for rel in files if "/" in rel})
    label_of = {name: index for index, name in enumerate(classes)}
    keys = _KeyMaker()
    candidates = [
        Candidate(
            key=keys(rel),
            label=label_of[rel.split("/", 1)[0]] if "/" in rel else None,
            ref=ImageRef(str(root / rel), rel),
        )
        for rel in files
    ]
    return Listing("folder", str(root.resolve()), dict(enumerate(classes)), candidates)


def list_demo() -> Listing:
    """The built-in demo set (see DEMO_IMAGES); needs no network."""
    import skimage.data  # the demo photographs live inside this package

    root = Path(skimage.data.__file__).parent
    classes = sorted({cls for _, cls, _ in DEMO_IMAGES})
    label_of = {name: index for index, name in enumerate(classes)}
    candidates, errors = [], []
    for filename, cls, _ in DEMO_IMAGES:
        path = root / filename
        if not path.exists():
            errors.append(f"{filename}: missing from the installed scikit-image package")
            continue
        candidates.append(Candidate(filename.rsplit(".", 1)[0], label_of[cls], ImageRef(str(path), filename)))
    return Listing("demo", f"scikit-image {_version('scikit-image')} data", dict(enumerate(classes)), candidates, errors)


def list_wds(urls: str | Sequence[str]) -> Listing:
    """ImageNet-style WebDataset shards (samples with jpg/jpeg/png/webp and cls), any fsspec URL.

    Only tar headers and the small `cls` members are read here; image bytes are addressed by
    their offset inside the shard, so the shards must be uncompressed tar files.
    """
    shard_urls = expand_shard_urls(urls)
    keys = _KeyMaker()
    candidates: list[Candidate] = []
    errors: list[str] = []
    labels: set[int] = set()
    for url in shard_urls:
        for sample_key, members, error in _index_tar(url):
            if error:
                errors.append(error)
                continue
            image_ext = next((e for e in WDS_IMAGE_EXTS if e in members), None)
            if image_ext is None:
                errors.append(f"{url}#{sample_key}: no image member (jpg, jpeg, png or webp)")
                continue
            label, label_error = _read_cls(url, members.get("cls"))
            if label_error:
                errors.append(f"{url}#{sample_key}: {label_error}")
                continue
            if label is not None:
                labels.add(label)
            info = members[image_ext]
            ref = ImageRef(url, f"{url}#{sample_key}.{image_ext}", info.offset_data, info.size)
            candidates.append(Candidate(keys(sample_key), label, ref))
    if not candidates:
        detail = f" ({errors[0]})" if errors else ""
        raise UserError(f"no image samples found in {len(shard_urls)} shard(s){detail}")
    location = urls if isinstance(urls, str) else " ".join(urls)
    return Listing("wds", location, {label: str(label) for label in sorted(labels)}, candidates, errors)


def _index_tar(url: str) -> Iterator[tuple[str, dict[str, tarfile.TarInfo], str | None]]:
    """(sample key, {extension: member}, error) per sample of an uncompressed tar."""
    try:
        fileobj = fsspec.open(url, "rb").open()
    except (OSError, ValueError) as err:
        yield "", {}, f"{url}: cannot open ({one_line(err)})"
        return
    with fileobj:
        try:
            tar = tarfile.open(fileobj=fileobj, mode="r:")
        except tarfile.TarError as err:
            yield "", {}, f"{url}: not an uncompressed tar file ({one_line(err)}); decompress it first"
            return
        for group in tar_groups(tar):  # headers only are kept, one sample at a time
            if group.error is not None:
                yield group.key or "", {}, f"{url}: truncated or corrupt tar after sample {group.key!r} ({one_line(group.error)})"
                return
            yield group.key, group.members, None  # type: ignore[misc]


def _read_cls(url: str, info: tarfile.TarInfo | None) -> tuple[int | None, str | None]:
    if info is None:
        return None, None
    raw = read_ref(ImageRef(url, url, info.offset_data, info.size))
    try:
        return int(raw.decode("utf-8").strip()), None
    except (UnicodeDecodeError, ValueError):
        return None, f"cls is not an integer ({raw[:20]!r})"


# ----------------------------------------------------------------------------------- reading


class _OpenFiles:
    """A few open fsspec files kept per process, so reading members of one shard reuses a handle."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._files: OrderedDict[str, Any] = OrderedDict()

    def get(self, location: str) -> Any:
        handle = self._files.pop(location, None)
        if handle is None:
            handle = fsspec.open(location, "rb").open()
            if len(self._files) >= self.capacity:
                self._files.popitem(last=False)[1].close()
        self._files[location] = handle
        return handle


_OPEN = _OpenFiles()


def read_ref(ref: ImageRef) -> bytes:
    """The encoded bytes an ImageRef points at (OSError if they cannot be read)."""
    if ref.offset < 0:
        if "://" not in ref.location:
            return Path(ref.location).read_bytes()
        with fsspec.open(ref.location, "rb") as f:
            return f.read()
    handle = _OPEN.get(ref.location)
    handle.seek(ref.offset)
    data = handle.read(ref.size)
    if len(data) != ref.size:
        raise OSError(f"expected {ref.size} bytes at offset {ref.offset}, got {len(data)}")
    return data


def probe_image(data: bytes, name: str) -> tuple[str, int, int]:
    """(extension, width, height) of encoded bytes, after decoding them fully once.

    JPEGs are decoded at reduced scale (libjpeg's DCT scaling): that still reads every byte,
    so truncation and corrupt data are caught, at a fraction of the cost for large photos.
    Raises ImageDecodeError with the same one-line wording as sweep.data.images.decode_image.
    """
    if not data:
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, width, height = img.format, img.width, img.height
            if fmt == "JPEG":
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            img.load()
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not a readable image (unknown format or corrupt data)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(f"{name}: not a readable image ({one_line(err)})") from None
    ext = FORMAT_EXT.get(fmt or "")
    if ext is None:
        raise ImageDecodeError(f"{name}: image format {fmt} is not supported in shards")
    return ext, width, height


def _verify_one(candidate: Candidate) -> SourceImage | str:
    try:
        ext, width, height = probe_image(read_ref(candidate.ref), candidate.ref.name)
    except ImageDecodeError as err:
        return str(err)
    except OSError as err:
        return f"{candidate.ref.name}: cannot read ({one_line(err)})"
    return SourceImage(candidate.key, candidate.label, candidate.ref, ext, width, height)


def verify_images(
    listing: Listing, workers: int | None = None, progress: Callable[[int], None] | None = None
) -> tuple[list[SourceImage], list[str]]:
    """Read and decode every listed image once; (usable images, one error line per bad one)."""
    images: list[SourceImage] = []
    errors = list(listing.errors)
    for result in parallel_map(_verify_one, listing.candidates, workers):
        if isinstance(result, str):
            errors.append(result)
        else:
            images.append(result)
        if progress:
            progress(1)
    return images, errors


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


__all__ = [
    "DEMO_IMAGES",
    "Candidate",
    "ImageRef",
    "Listing",
    "SourceImage",
    "list_demo",
    "list_folder",
    "list_wds",
    "make_key",
    "probe_image",
    "read_ref",
    "verify_images",
]
