"""User-facing errors: one clear line on stderr and exit status 2, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, model name, parameter, spec): printed as one line, exit 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always a single line
