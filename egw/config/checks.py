"""The building blocks of the config sections: bounds, secret fields, small checks."""

from __future__ import annotations

import re
from dataclasses import field
from typing import Any

from egw.errors import ConfigError

SCOPES = frozenset({"tasks:read", "tasks:write", "admin"})
MIB = 1 << 20
#: the bounds of ``max_log_bytes`` and ``storage.max_bytes`` (2**53: exact as a float too)
MIN_LOG_BYTES = 1024
MAX_BYTES = 1 << 53


def secret(default: Any = None) -> Any:
    """A field whose value never shows in a repr or an error."""
    return field(default=default, repr=False, metadata={"secret": True})


def positive(value: float, path: str) -> None:
    if value <= 0:
        raise ConfigError(path, "must be greater than 0")


def between(value: int, path: str, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(path, f"must be between {low} and {high}")


def log_bytes(value: int | None, section: str) -> None:
    if value is not None:
        between(value, f"{section}.max_log_bytes", MIN_LOG_BYTES, MAX_BYTES)


def url(value: str, path: str) -> None:
    if not re.match(r"https?://[^/\s]+", value):
        raise ConfigError(path, "must be an http:// or https:// URL")
