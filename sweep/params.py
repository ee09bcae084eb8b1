"""Parsing of `--param key=value` options: values are read as YAML scalars or lists
(`lr=0.05`, `eps=[0.01, 0.03]`, `optimizer=sign`), so the command line and sweep specs agree."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from sweep.errors import UserError


def parse_params(pairs: Iterable[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for text in pairs:
        key, sep, raw = text.partition("=")
        key = key.strip()
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
