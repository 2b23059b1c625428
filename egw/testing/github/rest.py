"""HTTP pieces of the GitHub simulator: ``basic-error`` bodies, faults, ETags, paging,
and the ``created`` filter of the runs lists (rest-actions.openapi.json;
tests/samples/github/NOTES.md "Pagination": ``per_page`` at most 100, a ``Link`` header
only when there is more than one page)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

DOCS = "https://docs.github.com/rest"


@dataclass
class Fault:
    kind: str  # status | reset_before | reset_after | slow
    match: str | None
    method: str | None
    count: int
    status: int = 500
    message: str | None = None
    retry_after: float | None = None
    seconds: float = 0.0

    def matches(self, request: web.Request) -> bool:
        return (
            self.count > 0
            and (self.match is None or self.match in request.path)
            and (self.method is None or self.method == request.method)
        )


def error(status: int, message: str, **headers: str) -> web.Response:
    body = {"message": message, "documentation_url": DOCS, "status": str(status)}
    return web.json_response(body, status=status, headers=headers)


def blob_not_found() -> web.Response:
    """Azure Blob Storage's 404 for a blob that does not exist, as the download URL of a
    job log answers until the log is uploaded: XML body, ``x-ms-error-code`` (Azure's
    Blob service error codes; the answer recorded in Azure/WALinuxAgent#2311)."""
    request_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error><Code>BlobNotFound</Code>'
        f"<Message>The specified blob does not exist.\nRequestId:{request_id}\n"
        f"Time:{stamp}</Message></Error>"
    )
    headers = {
        "Server": "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0",
        "x-ms-request-id": request_id,
        "x-ms-version": "2020-08-04",
        "x-ms-error-code": "BlobNotFound",
    }
    return web.Response(
        status=404, body=body.encode(), content_type="application/xml", headers=headers
    )


def conditional(request: web.Request, data: Any) -> web.Response:
    """A JSON answer with an ``ETag``; ``If-None-Match`` with it gets a bodiless 304."""
    body = json.dumps(data).encode()
    etag = 'W/"' + hashlib.sha256(body).hexdigest()[:40] + '"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=body, content_type="application/json", headers={"ETag": etag})


def page(request: web.Request, items: list[Any], key: str) -> web.Response:
    """One page of ``items`` as ``{"total_count", key: [...]}`` with a ``Link`` header."""
    try:
        per_page = min(100, max(1, int(request.query.get("per_page", "30"))))
        number = max(1, int(request.query.get("page", "1")))
    except ValueError:
        return error(422, "Invalid request.\n\nper_page and page must be integers.")
    last = max(1, -(-len(items) // per_page))
    chunk = items[(number - 1) * per_page : number * per_page]
    resp = conditional(request, {"total_count": len(items), key: chunk})
    if last > 1:

        def url(n: int) -> str:
            return str(request.url.with_query({**request.query, "page": str(n)}))

        rels = []
        if number < last:
            rels += [f'<{url(number + 1)}>; rel="next"', f'<{url(last)}>; rel="last"']
        if number > 1:
            rels += [f'<{url(1)}>; rel="first"', f'<{url(number - 1)}>; rel="prev"']
        resp.headers["Link"] = ", ".join(rels)
    return resp


def created_range(text: str | None) -> tuple[datetime, datetime] | None:
    """The ``created`` filter: ``>=X``, ``>X``, ``<=X``, ``<X``, ``X..Y`` or ``X``."""
    if not text:
        return None
    low, high = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)

    def parse(value: str, end: bool) -> datetime:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return day + timedelta(days=1) if end else day
        when = datetime.fromisoformat(value)
        return when if when.tzinfo else when.replace(tzinfo=UTC)

    if ".." in text:
        a, b = text.split("..", 1)
        return (
            low if a == "*" else parse(a, False),
            high if b == "*" else parse(b, True) + timedelta(seconds=1),
        )
    for op in (">=", "<=", ">", "<"):
        if text.startswith(op):
            value = text[len(op) :]
            if op == ">=":
                return parse(value, False), high
            if op == ">":
                return parse(value, True) if len(value) == 10 else (
                    parse(value, False) + timedelta(seconds=1)
                ), high
            if op == "<=":
                return low, parse(value, True) + (
                    timedelta(0) if len(value) == 10 else timedelta(seconds=1)
                )
            return low, parse(value, False)
    return parse(text, False), parse(text, True) + (
        timedelta(0) if len(text) == 10 else timedelta(seconds=1)
    )
