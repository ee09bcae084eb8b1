"""Where shard sets live: expand a folder, glob, brace pattern or fsspec URL (s3://...) into the
list of shard URLs, and the name of a shard set's manifest."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import fsspec
from braceexpand import braceexpand

from sweep.errors import UserError

MANIFEST = "manifest.json"


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
