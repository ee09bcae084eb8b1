"""Small file helpers every layer shares (stdlib only): atomic local writes and the one JSON
encoding policy.

`atomic_write(path, data)` writes a local file so that it appears whole or not at all (a
temporary file beside it, then a rename), keeping an existing file's mode. `json_safe(value)`
turns a value into what JSON can hold, under one policy: NaN and ±Infinity become null (JSON has
neither), tuples become lists, datetimes ISO text, numpy scalars Python numbers, anything else
unknown its `str`. `dumps_json` is `json.dumps` of that, with `allow_nan=False` as a guard.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write `data` to the local file `path` so that readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        if path.is_file():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_safe(value: Any) -> Any:
    """`value` as JSON can hold it: non-finite floats -> None, containers recursively."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return json_safe(item())
    return str(value)


def dumps_json(value: Any, *, indent: int | None = None) -> str:
    """JSON text of `value` under the one policy (see `json_safe`)."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


__all__ = ["TMP_SUFFIX", "atomic_write", "dumps_json", "json_safe"]
