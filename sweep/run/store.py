"""A run directory's storage: atomic Parquet writes, done-markers, resume, small JSON files.

The root is a local path or a filesystem URI (`s3://bucket/prefix`, `gs://…`, anything pyarrow or
fsspec opens). On a local filesystem a file is written under a temporary name that does not end
in `.parquet` (`.<unit_id>.<uuid>.tmp`) and renamed into place, so readers globbing `*.parquet`
never see half a file. On object stores an object becomes visible only once its upload completes,
so files are written under their final name directly.

A unit's tables are written one file each by `write_unit`, the `units` row last: that file is
the unit's done-marker. A retried unit writes the same names again, so a retry replaces rather
than adds. `read(table, columns, filter)` is the one reader of result tables in sweep/.
`s3_client()` and `s3_errors()` (botocore's errors as one line) serve the lease's S3 requests.

Fencing (no late writes): inside a sweep, a unit attempt only *stages* its files, under names of
its own (`.<unit_id>.a<attempt>.<uuid>.tmp`, on every filesystem), and returns their names; the
driver commits (renames into place) only the attempt it holds as current. An attempt the driver
gave up on (its actor declared dead, the unit re-queued) can therefore never replace the files of
a later attempt: its staged files are never committed and the next run's `clean_tmp` removes them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweep.errors import UserError
from sweep.files import TMP_SUFFIX, atomic_write
from sweep.schema import ALL_TABLES, SCHEMAS, STATUS_OK, partition_dir, to_table

__all__ = ["TMP_SUFFIX", "Conflict", "NoKey", "RunStore", "s3_client", "s3_errors"]


class RunStore:
    """One run directory (local or remote)."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(root)
        self.fs, self.base = _open_filesystem(self.root)
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __reduce__(self) -> tuple[Any, ...]:  # ship the URI, not the filesystem handle
        return (RunStore, (self.root,))

    # ---- paths -------------------------------------------------------------------------------
    def path(self, relative: str) -> str:
        return f"{self.base}/{relative}" if relative else self.base

    @staticmethod
    def unit_file(table: str, probe: str, model: str, unit_id: str) -> str:
        return f"{partition_dir(table, probe, model)}/{unit_id}.parquet"

    # ---- Parquet -----------------------------------------------------------------------------
    def write_parquet(self, relative: str, table: pa.Table) -> None:
        """Write one Parquet file so that it appears whole or not at all."""
        final = self.path(relative)
        folder, _, name = final.rpartition("/")
        self.fs.create_dir(folder, recursive=True)
        if not self.is_local:
            pq.write_table(table, final, filesystem=self.fs)
            return
        tmp = f"{folder}/.{name.removesuffix('.parquet')}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_unit(
        self,
        probe: str,
        model: str,
        unit_id: str,
        tables: Mapping[str, pa.Table | Sequence[Mapping[str, Any]]],
        done: Callable[[], Mapping[str, Any]],
        *,
        stage: int | None = None,
    ) -> list[tuple[str, str]]:
        """Write all of a unit's tables (Arrow tables, or row dicts of the table's schema) and
        then its `units` row, the done-marker, LAST: `done()` is called once every other table is
        written, so the row can say when the unit finished. stage: see `write_unit_tables`."""
        converted = {name: t if isinstance(t, pa.Table) else to_table(name, t) for name, t in tables.items()}
        staged = self.write_unit_tables(probe, model, unit_id, converted, stage=stage)
        marker = {"units": to_table("units", [done()])}
        return staged + self.write_unit_tables(probe, model, unit_id, marker, stage=stage)

    def write_unit_tables(
        self, probe: str, model: str, unit_id: str, tables: Mapping[str, pa.Table], *, stage: int | None = None
    ) -> list[tuple[str, str]]:
        """Write a unit's tables, `units` last (the done-marker).

        stage: an attempt number: write each file under a temporary name of that attempt instead
        and return the (staged, final) relative paths for `commit_staged`, in commit order."""
        names = [n for n in tables if n != "units"] + (["units"] if "units" in tables else [])
        staged: list[tuple[str, str]] = []
        for name in names:
            final = self.unit_file(name, probe, model, unit_id)
            if stage is None:
                self.write_parquet(final, tables[name])
            else:
                staged.append((self.stage_parquet(final, tables[name], stage), final))
        return staged

    def stage_parquet(self, relative: str, table: pa.Table, attempt: int) -> str:
        """Write `table` beside `relative` under a temporary name of this attempt; returns that name."""
        folder, _, name = relative.rpartition("/")
        staged = f"{folder}/.{name.removesuffix('.parquet')}.a{attempt}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
        self.fs.create_dir(self.path(folder), recursive=True)
        pq.write_table(table, self.path(staged), filesystem=self.fs)
        return staged

    def commit_staged(self, staged: Iterable[tuple[str, str]]) -> None:
        """Move staged files into place, in the order given (the `units` done-marker last)."""
        for tmp, final in staged:
            if self.is_local:
                os.replace(self.path(tmp), self.path(final))
            else:  # object stores: a copy (the object appears whole) and a delete
                self.fs.move(self.path(tmp), self.path(final))

    def discard_staged(self, staged: Iterable[tuple[str, str]]) -> None:
        for tmp, _ in staged:
            path = self.path(tmp)
            if self.fs.get_file_info(path).type == pafs.FileType.File:
                self.fs.delete_file(path)

    def remove_unit(self, probe: str, model: str, unit_id: str, tables: Iterable[str] = ALL_TABLES) -> None:
        """Delete whatever files a unit left (before recording it as failed)."""
        for table in tables:
            path = self.path(self.unit_file(table, probe, model, unit_id))
            if self.fs.get_file_info(path).type == pafs.FileType.File:
                self.fs.delete_file(path)

    def unit_status(self) -> dict[str, str]:
        """unit_id -> status ("ok" | "error") of every unit with a units row."""
        table = self.read("units", columns=["unit_id", "status"])
        return dict(zip(table.column("unit_id").to_pylist(), table.column("status").to_pylist()))

    def done_unit_ids(self) -> set[str]:
        """Units finished successfully (a failed unit is tried again by a rerun)."""
        return {unit_id for unit_id, status in self.unit_status().items() if status == STATUS_OK}

    def clean_tmp(self) -> int:
        """Delete temporary files a killed writer left behind; returns how many."""
        stale = [
            f.path for f in self._files("results")
            if f.base_name.startswith(".") and f.base_name.endswith(TMP_SUFFIX)
        ]
        for path in stale:
            self.fs.delete_file(path)
        return len(stale)

    def read(
        self,
        table: str,
        columns: Sequence[str] | None = None,
        filter: Any = None,
        *,
        unit: tuple[str, str, str] | None = None,
        on_bad_file: Callable[[str, Exception], None] | None = None,
    ) -> pa.Table:
        """The rows of result table `table` (`results/<table>/`, every finished file) as one
        Arrow table, `columns` only and `filter` (a pyarrow expression) applied; no file: an
        empty table of the schema. unit: only that unit's file, (probe, model, unit_id), in the
        order it was written. on_bad_file(path, error): a file that cannot be read is handed to
        it and left out (the others are read one by one); without it the error is raised."""
        if unit is not None:
            path = self.path(self.unit_file(table, *unit))
            files = [path] if self.fs.get_file_info(path).type == pafs.FileType.File else []
        else:
            files = self.parquet_files(f"results/{table}")
        if not files:
            return _empty(table, columns)
        try:  # one read of all files; only when one of them is bad, file by file
            return ds.dataset(files, filesystem=self.fs, format="parquet").to_table(columns=columns, filter=filter)
        except (pa.ArrowException, OSError):
            if on_bad_file is None:
                raise
        parts = []
        for path in files:
            try:
                with self.fs.open_input_file(path) as handle:
                    part = pq.read_table(handle, columns=columns)
                parts.append(part if filter is None else part.filter(filter))
            except (pa.ArrowException, OSError) as err:
                on_bad_file(path, err)
        return pa.concat_tables(parts, promote_options="default") if parts else _empty(table, columns)

    def parquet_files(self, relative: str) -> list[str]:
        """Paths (for `self.fs`) of the finished Parquet files under `relative`."""
        return [f.path for f in self._files(relative) if f.path.endswith(".parquet")]

    def _files(self, relative: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path(relative), recursive=True, allow_not_found=True)
        return [f for f in self.fs.get_file_info(selector) if f.type == pafs.FileType.File]

    # ---- small files -------------------------------------------------------------------------
    def exists(self, relative: str) -> bool:
        return self.fs.get_file_info(self.path(relative)).type == pafs.FileType.File

    def read_text(self, relative: str) -> str | None:
        if not self.exists(relative):
            return None
        with self.fs.open_input_stream(self.path(relative)) as stream:
            return stream.read().decode()

    def write_text(self, relative: str, text: str) -> None:
        """Atomic on a local filesystem (tmp + rename), a single PUT elsewhere."""
        final = self.path(relative)
        folder = final.rpartition("/")[0]
        self.fs.create_dir(folder, recursive=True)
        if not self.is_local:
            with self.fs.open_output_stream(final) as stream:
                stream.write(text.encode())
            return
        atomic_write(final, text)

    def read_json(self, relative: str) -> Any:
        text = self.read_text(relative)
        return None if text is None else json.loads(text)

    def write_json(self, relative: str, obj: Any) -> None:
        self.write_text(relative, json.dumps(obj, indent=2, default=str) + "\n")


# ---- S3 (the lease's conditional requests) ---------------------------------------------------------
class NoKey(Exception):
    """s3_errors: the object does not exist."""


class Conflict(Exception):
    """s3_errors (conflict_ok): a conditional request's precondition failed."""


@contextmanager
def s3_errors(where: str, conflict_ok: bool = False) -> Iterator[None]:
    """Turn botocore errors into one-line UserErrors (bad credentials, no bucket, no endpoint);
    a missing key and a failed precondition become NoKey and Conflict for the caller."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404"):
            raise NoKey() from None
        if conflict_ok and code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            raise Conflict() from None
        message = err.response.get("Error", {}).get("Message") or code
        raise UserError(f"{where}: {code}: {message}") from None
    except NoCredentialsError:
        raise UserError(f"{where}: no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)") from None
    except BotoCoreError as err:
        raise UserError(f"{where}: {err}") from None


def s3_client() -> Any:
    """A botocore S3 client from the usual AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, …)."""
    import botocore.session

    session = botocore.session.get_session()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return session.create_client("s3", region_name=region, endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


def _empty(table: str, columns: Sequence[str] | None) -> pa.Table:
    empty = SCHEMAS[table].empty_table() if table in SCHEMAS else pa.table({})
    return empty.select(list(columns)) if columns is not None else empty


def _open_filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path without trailing slash) for a local path or a URI."""
    if "://" not in root or root.startswith("file://"):
        local = Path(root.removeprefix("file://")).expanduser().resolve()
        return pafs.LocalFileSystem(), str(local)
    try:
        fs, path = pafs.FileSystem.from_uri(root)
    except OSError as err:  # e.g. an S3 endpoint that does not answer
        raise UserError(f"cannot open {root}: {' '.join(str(err).split())}") from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        import fsspec  # schemes pyarrow lacks (memory://, gcsfs extras, …)

        fsspec_fs, path = fsspec.core.url_to_fs(root)
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs))
    return fs, path.rstrip("/")
