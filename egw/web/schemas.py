"""Request bodies and query strings -> service inputs; every problem names its field."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

from aiohttp import web

from egw.errors import InvalidRequest, UnsupportedMediaType
from egw.service.tasks import SubmitRequest

_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")
_SUBMIT_FIELDS = {"provider", "task", "name", "labels", "timeout_s"}
MAX_TIMEOUT_S = 7 * 24 * 3600
#: the largest offset or sequence number a client may name (SQLite integers are 64-bit)
MAX_CURSOR = 2**62


async def read_json(request: web.Request) -> Any:
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {ctype or 'none'}",
            details={"content_type": ctype},
        )
    raw = await request.read()
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
            if not _LABEL_KEY.fullmatch(key):
                raise InvalidRequest(f"bad label name {key!r}", field=f"labels.{key}")
            if not isinstance(value, str) or len(value) > 256:
                raise InvalidRequest(
                    "a label value must be a string of at most 256 characters",
                    field=f"labels.{key}",
                )
    timeout = body.get("timeout_s")
    if timeout is not None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not 0 < timeout <= MAX_TIMEOUT_S
        ):
            raise InvalidRequest(
                f"timeout_s must be a number of seconds in (0, {MAX_TIMEOUT_S}]", field="timeout_s"
            )
        timeout = float(timeout)
    return SubmitRequest(provider=provider, task=task, name=name, labels=labels, timeout_s=timeout)


def int_query(request: web.Request, name: str, *, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # at most 19 significant digits before int(): Python refuses 4,300 and more
    if not re.fullmatch(r"-?0*[0-9]{1,19}", raw):
        raise InvalidRequest(f"{name} must be an integer between {lo} and {hi}", field=name)
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be between {lo} and {hi}", field=name)
    return value


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
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if raw.startswith("s") and raw[1:].isdigit():
            return int(raw[1:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidRequest("cursor is not valid", field="cursor")


def _cursor(raw: str | None, field: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"0*[0-9]{1,19}", raw):
        raise InvalidRequest(f"{field} must be a whole number up to {MAX_CURSOR}", field=field)
    value = int(raw)
    if value > MAX_CURSOR:
        raise InvalidRequest(f"{field} must be between 0 and {MAX_CURSOR}", field=field)
    return value


def last_event_id(request: web.Request, *, query: str) -> int | None:
    """``Last-Event-ID`` (a resuming EventSource) or the query parameter; both are checked,
    and the header wins."""
    from_query = _cursor(request.query.get(query), query)
    from_header = _cursor(request.headers.get("Last-Event-ID"), query)
    return from_header if from_header is not None else from_query
