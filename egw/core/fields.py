"""Field validators shared by every provider's ``validate`` (pure; raise `InvalidRequest`).

One rule, one message, wherever a field appears: a submit's ``task`` object is
checked field by field with these, so that ``task.env``, ``task.args`` or a
resource name are judged alike on every backend, and every error names the
field's path (``task.env.FOO``, ``task.args[3]``). Numbers are bounded *before*
any arithmetic or storage sees them (a 400-digit integer is a 400, not an
OverflowError); strings never carry NUL (no upstream, no argv, no environment
can hold one).

What differs between upstreams is passed in, never copied: the env-name
pattern (POSIX for processes and Nomad, Cloud Run's wider one), the names egw
or the upstream reserve, the size limits each documents.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from egw.errors import InvalidRequest

#: a POSIX environment variable name (what a shell can export; Nomad's task ``env`` too)
POSIX_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: argv and environment sizes when an upstream documents none: well under Linux's
#: MAX_ARG_STRLEN (128 KiB per string) and ARG_MAX
MAX_ITEMS = 1000
MAX_STRING_BYTES = 32 * 1024


def mapping(value: Any, where: str = "task") -> Mapping[str, Any]:
    """A JSON object."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{where} must be an object", field=where)
    return value


def known_keys(value: Mapping[str, Any], known: Collection[str], where: str = "task") -> None:
    """Refuse the first unknown key, naming the known ones."""
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise InvalidRequest(
            f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})",
            field=f"{where}.{unknown[0]}",
        )


def required(value: Mapping[str, Any], key: str, where: str = "task", *, hint: str = "") -> Any:
    """``value[key]``, or a 400 saying it is required (``hint`` says why it has no default)."""
    if value.get(key) is None:
        raise InvalidRequest(f"{where}.{key} is required{hint}", field=f"{where}.{key}")
    return value[key]


def text(
    value: Any, where: str, *, max_bytes: int = MAX_STRING_BYTES, allow_empty: bool = True
) -> str:
    """A string without NUL, at most ``max_bytes`` in UTF-8."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string", field=where)
    if "\x00" in value:
        raise InvalidRequest(f"{where} holds a NUL character", field=where)
    if not allow_empty and not value.strip():
        raise InvalidRequest(f"{where} must not be empty", field=where)
    if len(value) > max_bytes or len(value.encode()) > max_bytes:
        raise InvalidRequest(f"{where} is longer than {max_bytes} bytes", field=where)
    return value


def name(value: Any, where: str, pattern: re.Pattern[str], rule: str) -> str:
    """A name matching ``pattern`` whole; ``rule`` says in words what a valid one looks like."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string", field=where)
    if not pattern.fullmatch(value):
        raise InvalidRequest(f"{where} {value[:80]!r} is not a valid name: {rule}", field=where)
    return value


def argv(
    value: Any, where: str, *, max_items: int = MAX_ITEMS, max_bytes: int = MAX_STRING_BYTES
) -> list[str]:
    """A list of strings (arguments), each checked by `text`."""
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be a list of strings", field=where)
    if len(value) > max_items:
        raise InvalidRequest(f"{where} has more than {max_items} items", field=where)
    return [text(item, f"{where}[{i}]", max_bytes=max_bytes) for i, item in enumerate(value)]


def env(
    value: Any,
    where: str = "task.env",
    *,
    names: re.Pattern[str] = POSIX_ENV_NAME,
    rule: str = "letters, digits and '_', not starting with a digit",
    reserved: Iterable[str] = (),
    max_items: int = MAX_ITEMS,
    max_bytes: int = MAX_STRING_BYTES,
) -> dict[str, str]:
    """An object of environment variables; names match ``names``, none is ``reserved``."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{where} must be an object of name -> string value", field=where)
    if len(value) > max_items:
        raise InvalidRequest(f"{where} has more than {max_items} variables", field=where)
    taken = frozenset(reserved)
    out: dict[str, str] = {}
    for key, val in value.items():
        at = f"{where}.{key}"
        if not isinstance(key, str) or not names.fullmatch(key):
            raise InvalidRequest(
                f"{where}: {str(key)[:80]!r} is not a valid variable name ({rule})", field=at
            )
        if key in taken:
            raise InvalidRequest(f"{at}: {key} is set by egw or the upstream itself", field=at)
        out[key] = text(val, at, max_bytes=max_bytes)
    return out


def integer(value: Any, where: str, low: int, high: int) -> int:
    """A whole number in ``[low, high]`` (``3.0`` is 3; booleans, NaN and 1e400 are refused).

    The bounds are checked before any conversion, so no size of number reaches
    ``int()``, ``float()`` or SQLite unchecked."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{where} must be a whole number", field=where)
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise InvalidRequest(f"{where} must be a whole number", field=where)
    if not low <= value <= high:
        raise InvalidRequest(f"{where} must be between {low} and {high}", field=where)
    return int(value)


def number(value: Any, where: str, low: float, high: float) -> float:
    """A finite number in ``[low, high]`` (booleans refused; bounds checked before ``float()``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{where} must be a number", field=where)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"{where} must be a finite number", field=where)
    if not low <= value <= high:
        raise InvalidRequest(f"{where} must be between {low:g} and {high:g}", field=where)
    return float(value)


def string_map(value: Any, where: str, *, max_items: int = MAX_ITEMS) -> dict[str, str]:
    """An object of string -> string (Nomad ``meta``, labels), each value checked by `text`."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{where} must be an object of strings", field=where)
    if len(value) > max_items:
        raise InvalidRequest(f"{where} has more than {max_items} entries", field=where)
    out: dict[str, str] = {}
    for key, val in value.items():
        at = f"{where}.{key}"
        out[text(key, f"{where} key", allow_empty=False)] = text(val, at)
    return out


#: a namespace name: an RFC 1123 DNS label (lowercase letters, digits, inner hyphens, at
#: most 63), as Kubernetes and Nomad name theirs. egw.config.checks.NAMESPACE is the same
#: pattern (config may not import core); tests/core/test_access.py holds them equal
NAMESPACE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")


def namespace(value: Any, where: str = "namespace") -> str:
    """A namespace name (`NAMESPACE`)."""
    return name(
        value, where, NAMESPACE, "a DNS label: 1-63 lowercase letters, digits or inner hyphens"
    )
