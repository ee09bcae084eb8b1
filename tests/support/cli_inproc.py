"""`vitsweep ARGS` through the CLI's own entry point (`sweep.cli.main`) inside the test process,
answered as `subprocess.run(..., capture_output=True, text=True)` answers: exit status, stdout and
stderr.

Why: a `python -m sweep.cli` subprocess pays Python's start-up and, for most commands, the import
of torch, timm and the probes (seconds each on a 2-core machine, most of the time of a bad-input
test). In this process those imports are paid once. What stays the same as a subprocess:

- the exit status is what `sys.exit(main(argv))` would give (SystemExit from argparse included);
- stdout and stderr are captured at the file-descriptor level (fd 1 and 2 point at files while
  the command runs), so what C code or a child process writes is captured too;
- an exception that escapes `main` is printed as the interpreter prints it ("Traceback ...") and
  gives status 1, so a test asserting "no traceback" or a status still fails on a crash;
- a warning raised while the command runs is printed to stderr as a fresh interpreter prints it
  (Python's default filters, not pytest's recording, and not hidden because an earlier test
  already triggered it), so "one line on stderr" still fails on a warning;
- the working folder and environment are the ones given, and are restored afterwards.

What a subprocess still checks and this does not: start-up noise printed when a module is first
imported, and the `python -m sweep.cli` entry itself. Each test file that uses this keeps some
real subprocess tests of the same commands for that.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path


@contextlib.contextmanager
def _environment(env: Mapping[str, str] | None) -> Iterator[None]:
    if env is None:
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _fd_capture() -> Iterator[tuple[object, object]]:
    """fd 1 and 2 (and sys.stdout/sys.stderr, line-buffered over them) into two temp files."""
    out_file, err_file = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    os.dup2(out_file.fileno(), 1)
    os.dup2(err_file.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    try:
        yield out_file, err_file
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except ValueError:  # closed by the command (BrokenPipeError handling closes stderr)
                pass
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        os.close(saved_fds[0])
        os.close(saved_fds[1])


@contextlib.contextmanager
def _interpreter_warnings() -> Iterator[None]:
    """The warning filters of a plain `python` run, printing to (the captured) sys.stderr."""
    with warnings.catch_warnings():
        warnings.resetwarnings()  # also forgets which warnings were shown already
        for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")

        def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show
        yield


def _read(file: object) -> str:
    file.seek(0)  # type: ignore[attr-defined]
    return file.read().decode("utf-8", errors="replace")  # type: ignore[attr-defined]


def run_cli(*args: str | Path, cwd: Path | str | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`vitsweep *args` in this process (see the module docstring)."""
    from sweep.cli import main

    argv = [str(a) for a in args]
    old_cwd = os.getcwd()
    with _environment(env), _fd_capture() as (out_file, err_file), _interpreter_warnings():
        if cwd is not None:
            os.chdir(cwd)
        try:
            code = main(argv)
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001  (what the interpreter does with an uncaught error)
            traceback.print_exc()
            code = 1
        finally:
            os.chdir(old_cwd)
    stdout, stderr = _read(out_file), _read(err_file)
    out_file.close()  # type: ignore[attr-defined]
    err_file.close()  # type: ignore[attr-defined]
    return subprocess.CompletedProcess(["vitsweep", *argv], int(code), stdout, stderr)
