"""User-facing errors: one clear line on stderr and exit status 2, never a traceback.

`UserError` is what the code raises on bad input. `as_user_error` is the single place where the
known failures of the outside world (the OSError family: missing, read-only, occupied paths,
unreachable endpoints; undecodable JSON, YAML, text or Parquet; a Ray cluster that cannot be
reached; S3 failures from botocore and s3fs: no credentials, an endpoint that does not answer,
a missing bucket, however wrapped) become such a line; `sweep.cli.main` applies it to every
subcommand, so a new command inherits it. Anything else is a bug and keeps its traceback.

`one_line(err)` folds any message into one line (every module that prints or stores an error
message uses it). `int_at_least(n)` is an argparse `type=` that refuses, at parse time, a count below n.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit


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


_ARROW_SCHEMA = re.compile(r"Could not read schema from '([^']*)'\. Is this a '\w+' file\?: ")
_AWS_ERROR = re.compile(r"AWS Error (\w+)")
_BUCKET = re.compile(r"in bucket '([^']+)'")


def _arrow_message(text: str) -> str:
    """A pyarrow I/O message with its cause up front: "Could not read schema from 'F'. Is this a
    'parquet' file?: CAUSE" names F and CAUSE (the cause was cut off at the end of the line), and
    an S3 error of pyarrow's own client says what is wrong: credentials, endpoint or bucket."""
    schema = _ARROW_SCHEMA.search(text)
    prefix = ""
    if schema is not None:
        prefix, text = f"cannot read {schema.group(1)}: ", text[schema.end():]
    code = _AWS_ERROR.search(text)
    if code is not None:
        bucket = _BUCKET.search(text)
        where = f"bucket {bucket.group(1)}" if bucket else "the bucket"
        name = code.group(1)
        if name == "NETWORK_CONNECTION":
            text = (f"S3: cannot reach the endpoint {_endpoint()} ({name}); "
                    "check AWS_ENDPOINT_URL and that the server is up")
        elif name in {"NO_SUCH_BUCKET"} or "bucket does not exist" in text.lower():
            text = f"S3: {where} does not exist at {_endpoint()}"
        elif name in {"ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "MISSING_AUTHENTICATION_TOKEN"}:
            text = (f"S3: the endpoint {_endpoint()} refused the credentials for {where} ({name}); "
                    "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and access to the bucket")
    return prefix + text


def _os_error(err: OSError) -> str:
    if err.strerror is None and err.filename is None:  # pyarrow's OSErrors carry only a message
        return _short(_arrow_message(" ".join(str(err).split())))
    reason = err.strerror or _short(err) or type(err).__name__
    if err.filename is not None and err.filename2 is not None:
        return f"{err.filename} -> {err.filename2}: {reason}"
    if err.filename is not None:
        return f"{err.filename}: {reason}"
    return _short(err) or reason


def _endpoint(err: BaseException | None = None) -> str:
    """The S3 endpoint an error was about: the URL it names, else AWS_ENDPOINT_URL, else AWS's own."""
    url = (getattr(err, "kwargs", None) or {}).get("endpoint_url") if err is not None else None
    url = url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return "the default AWS endpoint"
    parts = urlsplit(str(url))  # the server, not the request's bucket, key and query
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else str(url)


_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
                     "InvalidToken", "AuthorizationHeaderMalformed", "Forbidden", "403"}


def _s3_error(err: BaseException) -> UserError | None:
    """The one line for a botocore/aiobotocore/s3fs failure: names the credentials, the endpoint
    or the bucket it is about (docs/cluster.md lists the settings), or None for another error."""
    module = type(err).__module__ or ""
    if not module.startswith(("botocore", "aiobotocore", "s3fs")):
        return None
    name = type(err).__name__
    if name in {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                "ProfileNotFound", "UnauthorizedSSOTokenError"}:
        return UserError(f"S3: no usable credentials ({_short(err)}): set AWS_ACCESS_KEY_ID and "
                         f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for {_endpoint()}")
    if name in {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionClosedError", "ProxyConnectionError", "SSLError"}:
        return UserError(f"S3: cannot reach the endpoint {_endpoint(err)} ({name}); "
                         "check AWS_ENDPOINT_URL and that the server is up")
    if name == "NoRegionError":
        return UserError("S3: no region set: set AWS_DEFAULT_REGION")
    response = getattr(err, "response", None)
    if isinstance(response, dict):  # ClientError: the server answered with an error code
        error = response.get("Error") or {}
        code = str(error.get("Code") or "")
        if code == "NoSuchBucket":
            bucket = error.get("BucketName") or "(unnamed)"
            return UserError(f"S3: bucket {bucket} does not exist at {_endpoint()}")
        if code in _CREDENTIAL_CODES:
            return UserError(f"S3: the endpoint {_endpoint()} refused the credentials ({code}: "
                             f"{_short(error.get('Message') or err)}); check AWS_ACCESS_KEY_ID, "
                             "AWS_SECRET_ACCESS_KEY and access to the bucket")
    return UserError(f"S3: {_short(err) or name}")


def _causes(err: BaseException) -> list[BaseException]:
    """err and the exceptions it was raised from or during (a few levels)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def as_user_error(err: BaseException) -> UserError | None:
    """The one-line UserError for a known failure, or None for a bug (keep its traceback)."""
    if isinstance(err, UserError):
        return err
    for cause in _causes(err):  # an S3 failure, however wrapped (fsspec, pyarrow, DuckDB)
        s3 = _s3_error(cause)
        if s3 is not None:
            return s3
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
        text = _arrow_message(" ".join(str(err).split()))  # ArrowInvalid and kin
        return UserError(_short(text) if text.startswith("cannot read ") else f"cannot read a Parquet/Arrow file ({_short(text)})")
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


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number >= minimum (and <= maximum, if given), so `--actors 0`
    or `labels --k 100000000000` fails before any work."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}" if maximum is None else f"int in [{minimum}, {maximum}]"
    return parse
