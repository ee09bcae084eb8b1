"""Write a query result (an Arrow table) as an aligned text table, CSV, JSON or Parquet.

Binary columns (the gallery's PNG bytes) print as `<png, N bytes>` in a text table and as base64
in CSV and JSON; list columns (loss trajectories) as JSON arrays; non-finite floats as null in
JSON. Parquet keeps every column as it is.

The output file of `vitsweep query --output FILE`: `check_output` before the query runs,
`staging_file` (a new file beside it that the result is written to) and `publish` (renamed over
FILE once the query has succeeded, with FILE's mode), so a stopped or failed query leaves FILE as
it was.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.errors import UserError
from sweep.files import json_safe

FORMATS = ("table", "csv", "json", "parquet")


def _plain(value: Any, *, binary: str) -> Any:
    """A JSON-able form of one cell."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if binary == "summary":
            kind = "png" if raw.startswith(b"\x89PNG") else "binary"
            return f"<{kind}, {len(raw)} bytes>"
        return base64.b64encode(raw).decode("ascii")
    if isinstance(value, float):  # the one JSON policy (NaN, ±inf -> null), shown as text in a table
        return str(value) if binary == "summary" and not math.isfinite(value) else json_safe(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta)):
        return json_safe(value)
    if isinstance(value, list):
        return [_plain(v, binary=binary) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, binary=binary) for k, v in value.items()}
    return value


def _plain_column(column: pa.ChunkedArray, *, binary: str) -> list[Any]:
    """One column's JSON-able values; strings, integers and booleans need no conversion, so a
    large result is converted column by column rather than cell by cell."""
    values = column.to_pylist()
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind) \
            or pa.types.is_boolean(kind) or pa.types.is_null(kind):
        return values
    return [_plain(v, binary=binary) for v in values]


def _rows(table: pa.Table, *, binary: str) -> list[tuple[Any, ...]]:
    columns = [_plain_column(table.column(i), binary=binary) for i in range(table.num_columns)]
    return list(zip(*columns)) if columns else [() for _ in range(table.num_rows)]


def to_records(table: pa.Table, *, binary: str = "base64") -> list[dict[str, Any]]:
    """Rows as dicts of JSON-able values."""
    names = table.column_names
    return [dict(zip(names, row)) for row in _rows(table, binary=binary)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def format_table(table: pa.Table) -> str:
    """An aligned plain-text table with a header line and a row count."""
    names = table.column_names
    rows = [[_cell(v) for v in rec.values()] for rec in to_records(table, binary="summary")]
    rows = [[c if len(c) <= 80 else c[:77] + "..." for c in row] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) for t in table.schema.types]

    def line(cells: list[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(names), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(out) + "\n"


def format_csv(table: pa.Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in _rows(table, binary="base64"):
        writer.writerow([json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v)
                         for v in row])
    return buf.getvalue()


def format_json(table: pa.Table) -> str:
    return json.dumps(to_records(table), indent=1, allow_nan=False) + "\n"


def write_result(table: pa.Table, fmt: str, output: Path | None) -> str | None:
    """Write `table` in `fmt` to `output`, or return the text to print when output is None.
    ValueError for parquet without an output file or an unknown format."""
    if fmt == "parquet":
        if output is None:
            raise ValueError("--format parquet needs --output FILE")
        pq.write_table(table, output)
        return None
    formatters = {"table": format_table, "csv": format_csv, "json": format_json}
    if fmt not in formatters:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    text = formatters[fmt](table)
    if output is None:
        return text
    output.write_text(text, encoding="utf-8")
    return None


# ---------------------------------------------------------------- the output file

def check_output(path: Path | None, force: bool) -> None:
    """`vitsweep query --output`: the file must be a file that can be written, not replaced unless --force: checked before
    the query runs (UserError, one line)."""
    if path is None:
        return
    if path.is_dir():
        raise UserError(f"--output {path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise UserError(f"--output {path}: the folder {path.parent} does not exist")
    if path.exists() and not force:
        raise UserError(f"--output {path}: exists; add --force to replace it")


def staging_file(path: Path) -> Path | None:
    """A new empty file beside `path` that the result is written to and then renamed over it,
    so a failed or stopped query leaves `path` as it was; None when `path` is not a plain file
    (a device, a pipe, a link) or its folder takes no new file: the result is then written to it
    directly, as before."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as err:
        if path.is_file() and os.access(path, os.W_OK):  # a folder only the file is writable in
            return None
        raise UserError(f"{path}: {err.strerror or err}") from None
    os.close(fd)
    return Path(name)


def publish(staging: Path, path: Path) -> None:
    """Move the written `staging` file to `path`, with the mode `path` had (or a new file's)."""
    if path.is_file():
        shutil.copymode(path, staging)
    else:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o666 & ~umask)
    os.replace(staging, path)
