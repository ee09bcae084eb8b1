"""User-facing errors: one clear line on stderr and exit status 2, never a traceback.

`UserError` is what the code raises on bad input. `as_user_error` is the single place where the
known failures of the outside world (the OSError family: missing, read-only, occupied paths,
unreachable endpoints; undecodable JSON, YAML, text or Parquet; a Ray cluster that cannot be
reached) become such a line; `sweep.cli.main` applies it to every subcommand, so a new command
inherits it. Anything else is a bug and keeps its traceback.

`one_line(err)` folds any message into one line (every module that prints or stores an error
message uses it). `int_at_least(n)` is an argparse `type=` that refuses, at parse time, a count below n.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user (file, model name, parameter, spec): printed as one line, exit 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always a single line


class RunFailed(UserError):
    """A sweep that cannot go on (no actor can be placed, actors keep dying): one line, exit 1."""

    exit_code = 1


_MAX_REASON = 300  # characters of a library's message kept in the line


def _short(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


def _os_error(err: OSError) -> str:
    reason = err.strerror or _short(err) or type(err).__name__
    if err.filename is not None and err.filename2 is not None:
        return f"{err.filename} -> {err.filename2}: {reason}"
    if err.filename is not None:
        return f"{err.filename}: {reason}"
    return _short(err) or reason


def as_user_error(err: BaseException) -> UserError | None:
    """The one-line UserError for a known failure, or None for a bug (keep its traceback)."""
    if isinstance(err, UserError):
        return err
    module = type(err).__module__ or ""
    if module.startswith("ray"):  # ray.exceptions.*: RaySystemError, GetTimeoutError, ...
        return UserError(f"Ray: {_short(err) or type(err).__name__}")
    if isinstance(err, ConnectionError) and err.filename is None:  # as ray.init raises when no GCS answers
        return UserError(f"connection failed: {_short(err) or type(err).__name__}")
    if isinstance(err, OSError):  # FileExistsError, IsADirectoryError, PermissionError, pyarrow's S3 errors, ...
        return UserError(_os_error(err))
    if isinstance(err, json.JSONDecodeError):
        return UserError(f"a file is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})")
    if isinstance(err, UnicodeDecodeError):
        return UserError(f"a file is not UTF-8 text ({_short(err)})")
    if module.startswith("yaml") and type(err).__name__.endswith("Error"):
        return UserError(f"not valid YAML ({_short(err)})")
    if module.startswith("pyarrow") and isinstance(err, (ValueError, TypeError, NotImplementedError)):
        return UserError(f"cannot read a Parquet/Arrow file ({_short(err)})")  # ArrowInvalid and kin
    if module.startswith("duckdb"):
        return UserError(_short(str(err).split("\nLINE ")[0]))
    return None


def one_line(err: BaseException | str, *, with_type: bool = False, limit: int | None = None) -> str:
    """The one way a message becomes a single line: whitespace runs folded to one space, DuckDB's
    caret pointer ("\nLINE ...") dropped, the exception's type name when it has no text (or always,
    with `with_type`), cut to `limit` characters."""
    raw = str(err).split("\nLINE ")[0]
    text = " ".join(raw.split())
    if isinstance(err, BaseException):
        name = type(err).__name__
        text = f"{name}: {text}" if with_type and text else (text or name)
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= minimum (so `--actors 0` fails before any work)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse
