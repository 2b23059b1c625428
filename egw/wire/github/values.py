"""Tolerant readers of GitHub's JSON values and headers (pure), shared by the wire modules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

#: an integer GitHub could send as text: ASCII digits, at most 19 (int64), one optional sign
_DIGITS = re.compile(r"-?[0-9]{1,19}", re.ASCII)


def as_int(value: Any) -> int | None:
    """An integer, from a number or a string of digits (booleans are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (works on plain dicts and multidicts)."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, item in headers.items():
        if key.lower() == lower:
            return item
    return None
