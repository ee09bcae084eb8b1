"""Pair-shard benchmark: writing and reading speed, and memory while writing.

Builds an ImageNet-val-like folder (JPEGs about 500x375, one folder per class) in a temporary
directory, then measures, in this process and against a baseline measured here too:

    baseline   a plain single-process PIL loop: read each file, decode it to RGB (2 per pair)
    write      `make_shards` (verify every image, pair, copy bytes into tars), pairs/s
    read       `read_pairs` decode + resize to 224, pairs/s with workers = 0, 1, 2
    memory     peak RSS of a fresh process writing N small vs N large pair sets

    .venv/bin/python -m benchmarks.bench_shards                   # 500 images, 2,000 / 20,000 pairs
    .venv/bin/python -m benchmarks.bench_shards --images 200 --pairs 1000 --pairs-large 5000
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, images: int, classes: int = 10) -> Path:
    """JPEGs of smooth random content at ImageNet-val-like sizes and quality."""
    rng = np.random.default_rng(0)
    for i in range(images):
        label = f"n{1440764 + i % classes:08d}"
        (root / label).mkdir(parents=True, exist_ok=True)
        width, height = (500, 375) if i % 4 else (375, 500)
        coarse = rng.integers(0, 256, size=(height // 12, width // 12, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        noise = rng.normal(0, 6, size=(height, width, 3))
        pixels = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / label / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=90)
    return root


def baseline_pairs_per_s(folder: Path, seconds: float = 4.0) -> tuple[float, float]:
    """Plain PIL: read + decode to RGB, one process, one thread; 2 decodes = 1 pair.
    Returns (pairs per wall second, pairs per CPU second)."""
    files = sorted(folder.rglob("*.JPEG"))
    decoded, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for path in files:
            with Image.open(io.BytesIO(path.read_bytes())) as img:
                img.convert("RGB")
            decoded += 1
    return decoded / 2 / (time.perf_counter() - start), decoded / 2 / (time.process_time() - cpu)


def write_child(folder: str, out: str, pairs: int) -> None:
    """Runs in a fresh process: write one shard set, print seconds and peak RSS as JSON."""
    from sweep.data.build import make_shards
    from sweep.data.sources import list_folder

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    after_import = peak_mib()  # torch's libraries alone account for most of it
    manifest = make_shards(list_folder(folder), out, pairing="random", pairs=pairs, seed=0, shard_size=1000, workers=2)
    print(json.dumps({**manifest["timing"], "import_rss_mib": after_import, "peak_rss_mib": peak_mib()}))


def run_writer(folder: Path, out: Path, pairs: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_shards", "--write-child", str(folder), str(out), str(pairs)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def read_rate(out: Path, workers: int, limit: int) -> tuple[float, float, float]:
    from sweep.data.images import Preprocess
    from sweep.data.shards import read_pairs

    geometry = Preprocess(size=(224, 224), crop_pct=0.875, interpolation="bicubic")
    count, start, first, first_cpu = 0, time.perf_counter(), 0.0, 0.0
    for record in read_pairs(str(out), geometry, workers=workers):
        assert record.error is None, record.error
        count += 1
        if count == 1:
            first, first_cpu = time.perf_counter(), time.process_time()  # start-up excluded
        if count > limit:
            break
    # CPU seconds of this process: meaningful per-core rate for workers=0 on a shared machine
    cpu = time.process_time() - first_cpu
    return (count - 1) / (time.perf_counter() - first), first - start, (count - 1) / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--pairs-large", type=int, default=20000)
    parser.add_argument("--read-limit", type=int, default=1000, help="pairs read per reader setting")
    parser.add_argument("--write-child", nargs=3, metavar=("FOLDER", "OUT", "PAIRS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_child:
        write_child(args.write_child[0], args.write_child[1], int(args.write_child[2]))
        return

    import os

    tmp = Path(tempfile.mkdtemp(prefix="bench_shards_"))
    try:
        folder = make_folder(tmp / "val", args.images)
        size_mb = sum(p.stat().st_size for p in folder.rglob("*.JPEG")) / 1e6
        print(f"# {args.images} JPEGs in 10 class folders, {size_mb:.1f} MB; {os.cpu_count()} CPU cores")
        base, base_cpu = baseline_pairs_per_s(folder)
        print(f"baseline  plain PIL decode loop, 1 process   {base:8.1f} pairs/s    1.00x   "
              f"{base_cpu:6.1f} pairs per CPU-second")

        small = run_writer(folder, tmp / "small", args.pairs)
        large = run_writer(folder, tmp / "large", args.pairs_large)
        print(f"verify    {args.images} images, 2 processes (incl. start) {args.images / small['verify_s']:8.1f} images/s")
        for n, res in ((args.pairs, small), (args.pairs_large, large)):
            rate = n / res["write_s"]
            print(f"write     {n:>6} pairs (read files, write tars) {rate:8.1f} pairs/s  {rate / base:6.2f}x   "
                  f"peak RSS {res['peak_rss_mib']:6.1f} MiB (after imports {res['import_rss_mib']:6.1f})")
        shutil.rmtree(tmp / "large")

        for workers in (0, 1, 2):
            rate, startup, per_cpu = read_rate(tmp / "small", workers, args.read_limit)
            per_core = f"   {per_cpu:6.1f} pairs per CPU-second" if workers == 0 else ""
            print(f"read      decode+resize 224, workers={workers}        {rate:8.1f} pairs/s  {rate / base:6.2f}x   "
                  f"first pair after {startup:.2f} s{per_core}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
