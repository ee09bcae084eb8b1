"""Tar members grouped by sample key, as WebDataset groups them: the one loop that does it.

A WebDataset sample is a run of consecutive regular members sharing a key (`pair_00000042.json`,
`pair_00000042.src.jpg`, ...: the key is the name up to the first dot of its last path part, the
extension the rest, lower-cased). `tar_groups` yields one `TarGroup` per run; a tar that cannot be
read on ends the iteration with a group that carries the error (and the members of the sample it
stopped in), so no reader stops on a bad shard.

    with tarfile.open(fileobj=stream, mode="r|*") as tar:          # streamed: read the data now
        for group in tar_groups(tar, read=member_bytes): ...       # group.members: {ext: bytes}
    with tarfile.open(path, "r:") as tar:                          # seekable: headers only
        for group in tar_groups(tar): ...                          # group.members: {ext: TarInfo}
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from webdataset.tariterators import base_plus_ext

# What a truncated or corrupt tar raises while it is read.
TAR_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, OSError, EOFError, ValueError)


@dataclass
class TarGroup:
    """One sample's members, or where reading stopped.

    `key` is None only when the tar failed before any member's header was read. `duplicate` is
    the first extension seen twice in the sample (the later member's value is kept). `error` set:
    the tar could not be read past this sample; `members` holds what was read of it."""

    key: str | None
    members: dict[str, Any] = field(default_factory=dict)  # extension -> TarInfo, or read(tar, info)
    duplicate: str | None = None
    error: BaseException | None = None


def member_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """A member's data, all of it (ReadError when the tar ends inside it)."""
    member = tar.extractfile(info)
    data = member.read() if member is not None else b""
    if len(data) != info.size:
        raise tarfile.ReadError("unexpected end of data")
    return data


def tar_groups(
    tar: tarfile.TarFile, read: Callable[[tarfile.TarFile, tarfile.TarInfo], Any] | None = None
) -> Iterator[TarGroup]:
    """Samples of an open tar, in tar order: {extension: member} per key, where a member is its
    TarInfo, or `read(tar, info)` (called as the member is reached: a streamed tar's data can be
    read only then). Only the current sample's headers are kept, so memory does not grow with the
    tar. The last group carries `error` when the tar is truncated or corrupt (or `read` raised one
    of TAR_ERRORS)."""
    group: TarGroup | None = None
    try:
        for info in tar:
            if not info.isreg():
                continue
            key, ext = base_plus_ext(info.name)
            if key is None:
                continue
            if group is not None and group.key != key:
                yield group
                group = None
            if group is None:
                group = TarGroup(key)
            value = info if read is None else read(tar, info)
            ext = ext.lower()
            if ext in group.members and group.duplicate is None:
                group.duplicate = ext
            group.members[ext] = value
            tar.members = []  # headers of earlier samples are not kept
    except TAR_ERRORS as err:
        if group is None:
            group = TarGroup(None)
        group.error = err
    if group is not None:
        yield group


__all__ = ["TAR_ERRORS", "TarGroup", "member_bytes", "tar_groups"]
