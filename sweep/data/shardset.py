"""A shard set: where its shards are and what its manifest says, read once. The one reader of a
shard set's `manifest.json` (`sweep.data.build` writes it).

A location is a folder (its manifest's shard list, else its `*.tar`), a glob, a brace pattern
("data/pairs-{000000..000009}.tar"), any fsspec URL (s3://...), a `pipe:` command, or a list of
these. `ShardSet.of(shard_url)` is the set a shard belongs to: the folder that holds it.

    shards = ShardSet("shards/val")
    shards.urls                   # ['shards/val/pairs-000000.tar', ...]
    shards.manifest               # the manifest dict, or None (none, damaged or not a folder)
    shards.label_names            # {0: 'cat', 1: 'dog'} from the manifest ({} without one)

    sets: dict[str, ShardSet] = {}          # one ShardSet, and one manifest read, per folder
    ShardSet.of(url, sets).pairs(url)       # pairs in one shard: manifest, else its tar headers

The manifest is read on first use and kept. A missing or damaged manifest never stops a lenient
reader (`manifest`, `pair_counts`, `label_names`, `pairs`); `urls` falls back to the folder's tar
files, and `check_manifest` says which problem it is. A failure to reach it (OSError) is raised
where the old readers raised it: when the shard list is expanded or the set checked.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec
from braceexpand import braceexpand

from sweep.data.tars import tar_groups
from sweep.errors import UserError, one_line

MANIFEST = "manifest.json"
_PATTERN_CHARS = "*?["


class ShardSet:
    """One shard set (see the module docstring). Cheap to make: nothing is read until asked."""

    def __init__(self, location: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> None:
        self.given = location  # as the caller wrote it, for messages
        if isinstance(location, (str, os.PathLike)):
            self.location: str | list[str] = os.fspath(location)
        else:
            self.location = [os.fspath(item) for item in location]
        self._folder: str | None | bool = False  # False: not worked out yet
        self._urls: list[str] | None = None
        self._read = False
        self._manifest: dict[str, Any] | None = None
        self._missing = False
        self._damage: str | None = None  # one line: why the manifest's content is unusable
        self._unreachable: BaseException | None = None  # the error reading it raised (not its content)

    @classmethod
    def of(cls, shard_url: str, cache: dict[str, ShardSet] | None = None) -> ShardSet:
        """The shard set whose folder holds `shard_url` (one per folder in `cache`, when given)."""
        folder = None if shard_url.startswith("pipe:") else (shard_url.rsplit("/", 1)[0] if "/" in shard_url else ".")
        key = folder if folder is not None else shard_url
        if cache is not None and key in cache:
            return cache[key]
        shard_set = cls(folder if folder is not None else shard_url)
        shard_set._folder = folder
        if cache is not None:
            cache[key] = shard_set
        return shard_set

    def __repr__(self) -> str:
        return f"ShardSet({self.location!r})"

    # -- where ------------------------------------------------------------------------------------

    @property
    def folder(self) -> str | None:
        """The folder whose manifest describes the set; None for a pattern, a list, a single
        shard or a pipe."""
        if self._folder is False:
            self._folder = None
            loc = self.location
            if isinstance(loc, str) and not loc.startswith("pipe:") and not any(c in loc for c in _PATTERN_CHARS + "{"):
                try:
                    fs, path = fsspec.core.url_to_fs(loc)
                    if fs.isdir(path):
                        self._folder = loc
                except Exception:  # unreachable or not a location fsspec knows: no manifest to read
                    pass
        return self._folder  # type: ignore[return-value]

    @property
    def urls(self) -> list[str]:
        """Shard URLs, in order. UserError if there are none (or a named shard is missing)."""
        if self._urls is None:
            self._urls = self._expand()
        return list(self._urls)

    def _expand(self) -> list[str]:
        items = [self.location] if isinstance(self.location, str) else self.location
        urls: list[str] = []
        for item in items:
            expanded = list(braceexpand(item))
            if len(expanded) > 1:
                for url in expanded:  # trusted as files: no per-shard round trip for remote URLs
                    if "://" not in url and not url.startswith("pipe:") and not os.path.exists(url):
                        raise UserError(f"no such shard: {url}")
                urls.extend(expanded)
            else:
                urls.extend(self._expand_one(item))
        if not urls:
            raise UserError(f"no shards found at {self.given}")
        return urls

    def _expand_one(self, url: str) -> list[str]:
        if url.startswith("pipe:"):
            return [url]
        fs, path = fsspec.core.url_to_fs(url)
        local = "://" not in url

        def as_url(p: str) -> str:
            return p if local else fs.unstrip_protocol(p)

        if any(ch in path for ch in _PATTERN_CHARS):
            found = sorted(fs.glob(path))
            if not found:
                raise UserError(f"no shards match {url}")
            return [as_url(p) for p in found]
        if fs.isdir(path):
            names = (self if url == self.location else ShardSet(url)).shard_names(folder=url)
            if names is not None:
                return [as_url(path.rstrip("/") + "/" + n) for n in names]
            found = sorted(fs.glob(path.rstrip("/") + "/*.tar"))  # no manifest, or a damaged one
            if not found:
                raise UserError(f"no .tar shards in {url}")
            return [as_url(p) for p in found]
        if not fs.exists(path):
            raise UserError(f"no such shard: {url}")
        return [url]

    # -- the manifest -----------------------------------------------------------------------------

    def _load(self, folder: str | None = None) -> None:
        if self._read:
            return
        self._read = True
        if folder is not None:
            self._folder = folder
        folder = self.folder
        if folder is None:
            return
        try:
            fs, path = fsspec.core.url_to_fs(_manifest_path(folder))
            if not fs.exists(path):
                self._missing = True
                return
            with fs.open(path, "rb") as f:
                manifest = json.loads(f.read().decode("utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
            self._manifest = manifest
        except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError too
            self._damage = one_line(err)
        except Exception as err:  # unreachable: the strict readers raise it, the lenient ones go on
            self._unreachable = err

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The manifest (a dict), or None: not a folder, no manifest, damaged or unreachable."""
        self._load()
        return self._manifest

    def check_manifest(self) -> str | None:
        """None when the folder's manifest is readable; else one line saying what is wrong with
        it (as `vitsweep shards check` reports it). Raises what reaching it raised (OSError)."""
        self._load()
        if self._unreachable is not None:
            raise self._unreachable
        if self._missing:
            return f"{self.given}: no {MANIFEST} (an unfinished or foreign shard set)"
        if self._damage is not None:
            return f"{_manifest_path(self.folder or '.', local_style=True)}: unreadable manifest ({self._damage})"
        return None

    def shard_names(self, folder: str | None = None) -> list[str] | None:
        """The shard file names the manifest lists, in order; None without a usable list.
        Raises what reaching the manifest raised. `folder`: the set's folder, when the caller
        already knows the location is one."""
        self._load(folder)
        if self._unreachable is not None:
            raise self._unreachable
        try:
            return [s["name"] for s in self._manifest["shards"]] if self._manifest is not None else None
        except (KeyError, TypeError):
            return None  # a damaged manifest: the caller falls back to the folder's tar files

    @property
    def pair_counts(self) -> dict[str, int] | None:
        """Shard file name -> pairs, from the manifest; None without a usable one."""
        manifest = self.manifest
        try:
            return {s["name"]: int(s["pairs"]) for s in manifest["shards"]} if manifest is not None else None
        except Exception:  # foreign or damaged: the caller counts another way or says "?"
            return None

    @property
    def label_names(self) -> dict[int, str]:
        """Dataset label index -> name, from the manifest's `label_names` ({} without them; a
        damaged table is read up to its first bad entry)."""
        names: dict[int, str] = {}
        try:
            for index, name in ((self.manifest or {}).get("label_names") or {}).items():
                names[int(index)] = str(name)
        except (ValueError, TypeError, AttributeError):
            pass
        return names

    # -- pairs ------------------------------------------------------------------------------------

    def pairs(self, shard_url: str) -> int | None:
        """Pairs in one of the set's shards: the manifest's count, else (a local tar) the samples
        its headers group into, as the reader groups them; None when neither can be known."""
        counts = self.pair_counts
        name = shard_url.rsplit("/", 1)[-1]
        if counts is not None and name in counts:
            return counts[name]
        if "://" not in shard_url and os.path.isfile(shard_url):
            return count_tar_samples(shard_url)
        return None


def count_tar_samples(path: str) -> int | None:
    """Samples in a local tar, from its headers only; what was counted before a truncated or
    corrupt part (None if nothing was)."""
    count = 0
    try:
        with tarfile.open(path, "r:*") as tar:
            for group in tar_groups(tar):
                if group.key is not None:
                    count += 1
                if group.error is not None:
                    return count or None
    except (OSError, tarfile.TarError):
        return count or None
    return count


def expand_shard_urls(spec: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    """Shard URLs from a folder (its manifest's list, else its *.tar), a glob, a brace pattern
    ("data/pairs-{000000..000009}.tar"), or any fsspec URL (s3://...). UserError if none."""
    return ShardSet(spec).urls


def _manifest_path(folder: str, local_style: bool = False) -> str:
    if local_style and "://" not in folder:
        return str(Path(folder) / MANIFEST)
    return folder.rstrip("/") + "/" + MANIFEST


__all__ = ["MANIFEST", "ShardSet", "count_tar_samples", "expand_shard_urls"]
