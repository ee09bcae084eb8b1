"""The one parser of `--param key=value` options.

By default values are read as YAML scalars or lists (`lr=0.05`, `eps=[0.01, 0.03]`,
`optimizer=sign`), so the command line and sweep specs agree (`vitsweep probe`). With
`as_text=True` every value is kept as the text after the first `=` (`vitsweep query --named`:
a named query binds text parameters, analysis.named reads `NULL` or an empty value as all);
there a key given twice keeps its last value, as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from sweep.errors import UserError


def parse_params(pairs: Iterable[str], *, as_text: bool = False) -> dict[str, Any]:
    """{key: value} of `key=value` texts; UserError (one line) for a text without `key=`.
    as_text: keep values as text (no YAML), a repeated key's last value wins."""
    params: dict[str, Any] = {}
    for text in pairs:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if as_text:
            if not sep or not key:
                raise UserError(f"--param wants KEY=VALUE, got {text!r}")
            params[key] = raw
            continue
        if not sep or not key:
            raise UserError(f"bad --param {text!r}: write key=value, e.g. --param lr=0.05")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UserError(f"bad --param {text!r}: the value is not a number, word or [list]") from None
        if key in params:
            raise UserError(f"--param {key} given twice")
        params[key] = value
    return params
