"""Request bodies and query strings -> service inputs; every problem names its field."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import orjson
from aiohttp import web

from egw.core import fields
from egw.errors import InvalidRequest, UnsupportedMediaType
from egw.service.requests import SubmitRequest

LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")
_SIGNED = re.compile(r"(-?)0*([0-9]{1,19})", re.ASCII)
_UNSIGNED = re.compile(r"()0*([0-9]{1,19})", re.ASCII)
_SUBMIT_FIELDS = {"namespace", "provider", "task", "name", "labels", "timeout_s"}
MAX_TIMEOUT_S = 7 * 24 * 3600
#: the largest offset or sequence number a client may name (SQLite integers are 64-bit)
MAX_CURSOR = 2**62
_MAX_CURSOR_TEXT = 64  # "s" and 19 digits take 28 characters of base64


async def read_json(request: web.Request) -> Any:
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {ctype or 'none'}",
            details={"content_type": ctype},
        )
    raw = await request.read()
    try:
        # orjson first: it refuses what the stdlib would need a second, encoding pass to
        # find (lone surrogates), and the two passes were a tenth of a queued submit
        # (bench "submits"); what it refuses is read again the stdlib's way below. It reads
        # an integer past 64 bits as a float: no field egw or an upstream takes holds one
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _stdlib_json(raw)


def _stdlib_json(raw: bytes) -> Any:
    """A body orjson refused: the stdlib reads what it can (NaN, infinities, integers past
    64 bits, which the fields' own checks then refuse naming the field) and says why not."""
    try:
        body = json.loads(raw)
    # ValueError also covers integers longer than Python's 4,300-digit limit
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", field="body") from None
    try:
        # JSON may spell lone UTF-16 surrogates (\ud800) that no UTF-8 text can hold
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            "the body holds text that is not valid Unicode (a lone surrogate)", field="body"
        ) from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply", field="body") from None
    return body


def submit_request(body: Any) -> SubmitRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", field="body")
    unknown = sorted(set(body) - _SUBMIT_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    provider = body.get("provider")
    if not isinstance(provider, str) or not provider:
        raise InvalidRequest("provider is required (a string)", field="provider")
    namespace = body.get("namespace")
    if namespace is not None:
        namespace = fields.namespace(namespace)
    task = body.get("task")
    if not isinstance(task, dict):
        raise InvalidRequest("task is required (an object)", field="task")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 200):
        raise InvalidRequest("name must be a string of 1 to 200 characters", field="name")
    labels = body.get("labels")
    if labels is not None:
        if not isinstance(labels, dict) or len(labels) > 64:
            raise InvalidRequest("labels must be an object of at most 64 strings", field="labels")
        for key, value in labels.items():
            if not LABEL_KEY.fullmatch(key):
                raise InvalidRequest(f"bad label name {key!r}", field=f"labels.{key}")
            if not isinstance(value, str) or len(value) > 256:
                raise InvalidRequest(
                    "a label value must be a string of at most 256 characters",
                    field=f"labels.{key}",
                )
    timeout = body.get("timeout_s")
    if timeout is not None:
        # bounded before float(): a 400-digit integer is a 400, never an OverflowError
        timeout = fields.number(timeout, "timeout_s", 0, MAX_TIMEOUT_S)
        if timeout <= 0:
            raise InvalidRequest(
                f"timeout_s must be a number of seconds in (0, {MAX_TIMEOUT_S}]", field="timeout_s"
            )
    return SubmitRequest(
        namespace=namespace,
        provider=provider,
        task=task,
        name=name,
        labels=labels,
        timeout_s=timeout,
    )


def int_query(request: web.Request, name: str, *, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = _whole(raw)
    if value is None:
        raise InvalidRequest(f"{name} must be an integer between {lo} and {hi}", field=name)
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be between {lo} and {hi}", field=name)
    return value


def _whole(raw: str, *, signed: bool = True) -> int | None:
    """An ASCII integer of at most 19 significant digits, or None: ``int()`` never sees a
    longer one (Python refuses 4,300 digits, leading zeros included; SQLite holds 64 bits)."""
    m = (_SIGNED if signed else _UNSIGNED).fullmatch(raw)
    if m is None:
        return None
    value = int(m.group(2))
    return -value if m.group(1) else value


def duration_query(request: web.Request, name: str, *, default_s: float, max_s: float) -> float:
    """A Nomad-style duration (``30s``, ``5m``, ``500ms``; a bare number is seconds)."""
    raw = request.query.get(name)
    if raw is None:
        return default_s
    m = _DURATION.fullmatch(raw.strip())
    if not m:
        raise InvalidRequest(f"{name} must be a duration like 30s or 5m", field=name)
    value = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return min(value, max_s)


def bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return False
    if raw.lower() in ("", "1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise InvalidRequest(f"{name} must be true or false", field=name)


def wants_sse(request: web.Request) -> bool:
    """An event stream is asked for with ``Accept: text/event-stream`` or ``?follow=1``."""
    return "text/event-stream" in request.headers.get("Accept", "") or bool_query(request, "follow")


def encode_cursor(submit_seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{submit_seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The submit sequence a list cursor names; anything not made by `encode_cursor`
    (or naming a number SQLite cannot hold) is a 400."""
    if len(cursor) <= _MAX_CURSOR_TEXT:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raw = ""
        value = _whole(raw[1:], signed=False) if raw.startswith("s") else None
        if value is not None and value <= MAX_CURSOR:
            return value
    raise InvalidRequest("cursor is not valid", field="cursor")


def _cursor(raw: str | None, field: str) -> int | None:
    if raw is None or raw == "":
        return None
    value = _whole(raw, signed=False)
    if value is None:
        raise InvalidRequest(f"{field} must be a whole number up to {MAX_CURSOR}", field=field)
    if value > MAX_CURSOR:
        raise InvalidRequest(f"{field} must be between 0 and {MAX_CURSOR}", field=field)
    return value


def last_event_id(request: web.Request, *, query: str) -> int | None:
    """``Last-Event-ID`` (a resuming EventSource) or the query parameter; both are checked,
    and the header wins. An empty header is no cursor (an EventSource that has seen no id);
    an empty query parameter is no number, so a 400 as the schema says."""
    raw = request.query.get(query)
    if raw == "":
        raise InvalidRequest(f"{query} must be a whole number up to {MAX_CURSOR}", field=query)
    from_query = _cursor(raw, query)
    from_header = _cursor(request.headers.get("Last-Event-ID"), query)
    return from_header if from_header is not None else from_query
