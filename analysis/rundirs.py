"""Run directories and their files, without DuckDB: check that a path (or an `s3://` URI) is a
vitsweep run, list its result tables' Parquet files, and read its progress.json, manifest.json and
spec.yaml. analysis.db builds its views on these; the dashboard keys its caches on
`file_listing`. Objects in storage are read through fsspec (s3fs). Never imports torch or Ray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_RUN_MARKERS = ("spec.yaml", "manifest.json", "progress.json", "results")


class RunNotFound(Exception):
    """A path given as a run directory does not exist or is not a vitsweep run (one-line message)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _is_url(path: str | Path) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


class _Remote(str):
    """A run given as a URI (s3://bucket/prefix), without a trailing slash."""


def _remote_fs(url: str) -> Any:
    import fsspec

    return fsspec.core.url_to_fs(url)[0]


def _check_remote_run(path: str) -> _Remote:
    url = _Remote(str(path).rstrip("/"))
    fs = _remote_fs(url)
    try:
        found = any(fs.exists(f"{url}/{marker}") for marker in _RUN_MARKERS)
    except (OSError, ValueError) as err:  # no bucket, bad credentials, endpoint unreachable
        raise RunNotFound(f"cannot read {path}: {err}") from None
    if not found:
        raise RunNotFound(f"not a vitsweep run (no spec.yaml, manifest.json, progress.json or results/): {path}")
    return url


def _check_run_dir(path: str | Path) -> Path:
    if _is_url(path):
        return _check_remote_run(str(path))  # type: ignore[return-value]
    run = Path(path).expanduser()
    if not run.exists():
        raise RunNotFound(f"run directory not found: {path}")
    if not run.is_dir():
        raise RunNotFound(f"not a directory: {path}")
    if not any((run / marker).exists() for marker in _RUN_MARKERS):
        raise RunNotFound(
            f"not a vitsweep run (no spec.yaml, manifest.json, progress.json or results/): {path}"
        )
    return run.resolve()


def _table_files(run: Path, table: str) -> list[Path] | list[str]:
    """The finished Parquet files of one table in one run (temporary files do not end in
    .parquet), sorted by name; URIs for a run in object storage."""
    if isinstance(run, _Remote):
        return sorted(_remote_fs(run).glob(f"{run}/results/{table}/*/*/*.parquet"))
    folder = run / "results" / table
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*/*/*.parquet"))


def _same_schema(files: Sequence[Path]) -> bool:
    """Whether a table's files all look written by one version: the first and the newest file
    have the same columns. (vitsweep writes every file with the table's whole schema, so files
    differ only between versions, and a run resumed by another version has a newest file of the
    other kind.) Reading two footers is cheap; unifying every footer (union_by_name) is not."""
    if any(isinstance(f, str) for f in files):
        return False  # object storage: let DuckDB's union_by_name unify the footers
    try:
        newest = max(files, key=lambda f: f.stat().st_mtime_ns)
        return pq.read_schema(files[0]).names == pq.read_schema(newest).names
    except (OSError, pa.ArrowInvalid):
        return False  # a file vanished or is odd: let DuckDB's union_by_name sort it out


def check_runs(run_dirs: Sequence[str | Path] | str | Path) -> list[Path]:
    """The run directories, resolved and without duplicates; RunNotFound for a bad path."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise RunNotFound("no run directory given")
    runs: list[Path] = []
    for path in run_dirs:
        run = _check_run_dir(path)
        if run not in runs:
            runs.append(run)
    return runs


# ---------------------------------------------------------------- what a run holds


def file_listing(run_dirs: Sequence[str | Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime in ns) of every finished Parquet file of the runs, sorted: the key of
    every cached result (a finished run is read once; a new or rewritten file changes it).
    Missing runs list nothing."""
    out: list[tuple[str, int, int]] = []
    for run in run_dirs:
        if _is_url(run):
            out.extend(_remote_listing(str(run).rstrip("/")))
            continue
        results = Path(run) / "results"
        for folder, _, names in os.walk(results):
            for name in names:
                if name.endswith(".parquet"):
                    path = os.path.join(folder, name)
                    try:
                        st = os.stat(path)
                    except FileNotFoundError:  # replaced between the listing and the stat
                        continue
                    out.append((path, st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def _remote_listing(run: str) -> list[tuple[str, int, int]]:
    """file_listing's entries for a run in object storage (mtime from the store, in ns)."""
    fs = _remote_fs(run)
    try:
        found = fs.find(f"{run}/results", detail=True)
    except FileNotFoundError:
        return []
    out = []
    for path, info in found.items():
        if path.endswith(".parquet"):
            modified = info.get("LastModified") or info.get("mtime") or 0
            stamp = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else int(modified)
            out.append((fs.unstrip_protocol(path), int(info.get("size") or 0), stamp))
    return out


def _read_text(path: Path | str) -> str | None:
    if isinstance(path, str):  # a URI
        try:
            with _remote_fs(path).open(path, "r", encoding="utf-8") as handle:
                return handle.read()
        except (FileNotFoundError, IsADirectoryError):
            return None
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _in_run(run_dir: str | Path, name: str) -> Path | str:
    return f"{str(run_dir).rstrip('/')}/{name}" if _is_url(run_dir) else Path(run_dir) / name


def _read_json(path: Path | str) -> dict[str, Any] | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None  # caught mid-rewrite by a non-atomic writer: treat as not there yet
    return value if isinstance(value, dict) else None


def read_progress(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/progress.json as a dict, or None when it is missing or unreadable."""
    return _read_json(_in_run(run_dir, "progress.json"))


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/manifest.json as a dict, or None when it is missing or unreadable."""
    return _read_json(_in_run(run_dir, "manifest.json"))


def read_spec_text(run_dir: str | Path) -> str | None:
    """RUN/spec.yaml as text, or None when it is missing."""
    return _read_text(_in_run(run_dir, "spec.yaml"))
