"""Build the config dataclasses from parsed YAML, strictly: every key known, every value of
its field's type, ``${VAR}`` substituted, each section's ``validate`` run."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from egw.errors import ConfigError

T = TypeVar("T")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: str, environ: Mapping[str, str]) -> str:
    return _VAR.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value)


def build(cls: type[T], data: Mapping[str, Any], path: str, environ: Mapping[str, str]) -> T:
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ConfigError(_join(path, str(key)), "unknown key")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        key_path = _join(path, name)
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(key_path, "is required")
            continue
        value = data[name]
        shorthand = f.metadata.get("shorthand")
        if shorthand is not None:  # a short spelling of the field's full form
            value = shorthand(value)
        kwargs[name] = _convert(
            hints[name], value, key_path, environ, bool(f.metadata.get("secret"))
        )
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path or cls.__name__.lower())
    return obj


def _convert(tp: Any, value: Any, path: str, environ: Mapping[str, str], is_secret: bool) -> Any:
    if isinstance(value, str):
        value = _substitute(value, environ)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or value == "":
            return None
        return _convert(args[0], value, path, environ, is_secret)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"must be a list, not {_kind(value, is_secret)}")
        (item,) = get_args(tp)
        return [_convert(item, v, f"{path}[{i}]", environ, is_secret) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping, not {_kind(value, is_secret)}")
        _, item = get_args(tp)
        return {
            str(k): _convert(item, v, _join(path, str(k)), environ, is_secret)
            for k, v in value.items()
        }
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping, not {_kind(value, is_secret)}")
        return build(tp, value, path, environ)  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # ASCII digits that fit 64 bits: int() is never handed a 5,000-digit string
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value, re.ASCII):
            return int(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and not is_secret:
            return str(value)
    raise ConfigError(path, f"must be {getattr(tp, '__name__', tp)}, not {_kind(value, is_secret)}")


def _kind(value: Any, is_secret: bool) -> str:
    # only a scalar is quoted: a list or mapping may hold secrets written in the file
    if is_secret or not isinstance(value, str | int | float | bool | None):
        return type(value).__name__
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
