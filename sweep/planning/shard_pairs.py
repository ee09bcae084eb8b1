"""Pairs per shard for the plan: `shard_pairs` is the one function the planner calls.

Today it reads each shard set's manifest itself (once per folder) and, for a local tar without
one, counts the samples in the tar's headers. sweep/data/shardset.py (`ShardSet`, the one
manifest reader) and sweep/data/tars.py (the one tar-grouping iterator) replace this module's
body when they land: swap `shard_pairs` for them and delete the rest.
"""

from __future__ import annotations

import json
import os
import tarfile


def shard_pairs(shards: list[str], pairs_per_shard: int | None = None) -> dict[str, int | None]:
    """Pairs in each shard (None: could not be counted); `pairs_per_shard` instead of reading
    manifests and tars."""
    if pairs_per_shard is not None:
        return {shard: pairs_per_shard for shard in shards}
    manifests: dict[str, dict[str, int] | None] = {}
    return {shard: count_pairs(shard, manifests) for shard in shards}


def count_pairs(url: str, manifests: dict[str, dict[str, int] | None] | None = None) -> int | None:
    """Pairs in one shard: from its shard set's manifest, else (a local tar) by reading the tar's
    headers (samples grouped by key, as the reader groups them); None when neither is possible.
    `manifests` caches the manifests read so far, by folder."""
    from_manifest = _manifest_count(url, {} if manifests is None else manifests)
    if from_manifest is not None:
        return from_manifest
    if "://" not in url and os.path.isfile(url):
        return _tar_count(url)
    return None


def _manifest_count(url: str, manifests: dict[str, dict[str, int] | None]) -> int | None:
    folder, name = url.rsplit("/", 1) if "/" in url else (".", url)
    if folder not in manifests:
        manifests[folder] = _read_manifest(folder)
    table = manifests[folder]
    return None if table is None else table.get(name)


def _read_manifest(folder: str) -> dict[str, int] | None:
    from sweep.data.locations import MANIFEST

    path = f"{folder}/{MANIFEST}"
    try:
        if "://" in path:
            import fsspec

            with fsspec.open(path, "rb") as f:
                data = json.load(f)
        else:
            if not os.path.isfile(path):
                return None
            with open(path, "rb") as f:
                data = json.load(f)
        return {s["name"]: int(s["pairs"]) for s in data["shards"]}
    except Exception:  # unreachable, missing or foreign: the caller counts another way or says "?"
        return None


def _tar_count(path: str) -> int | None:
    from webdataset.tariterators import base_plus_ext

    count, last = 0, None
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, _ = base_plus_ext(info.name)
                if key is not None and key != last:
                    count, last = count + 1, key
    except (OSError, tarfile.TarError):
        return count or None
    return count
