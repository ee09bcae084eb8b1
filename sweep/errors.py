"""User-facing errors: one clear line on stderr and exit status 2, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, model name, parameter, spec): printed as one line, exit 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always a single line


class RunFailed(UserError):
    """A sweep that cannot go on (no actor can be placed, actors keep dying): one line, exit 1."""

    exit_code = 1
