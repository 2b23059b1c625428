"""Bad input gets the right 4xx in the one error shape; hostile input never a 5xx; plus the
request-id, idempotency, ETag, blocking-query, cancel-conflict and listing contracts.

Every error response is checked for the exact shape
``{"error": {"code", "message", "details"}}`` (``details.field`` naming the
field for field errors), a JSON content type, and no traceback in the body.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from support import ADMIN, READER, WRITER, make_config, submit_local, wait_terminal

from egw.web.app import create_app

Client = TestClient[web.Request, web.Application]
JSON = {"Content-Type": "application/json"}
GOOD = {"provider": "local", "task": {"command": "true"}}


async def expect_error(
    resp: ClientResponse, status: int, *, code: str | None = None, field: str | None = None
) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    body = json.loads(text)
    assert list(body) == ["error"], body
    err = body["error"]
    assert set(err) == {"code", "message", "details"}, err
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["details"], dict)
    if code is not None:
        assert err["code"] == code, err
    if field is not None:
        assert err["details"].get("field") == field, err
    assert_no_traceback(text)
    return dict(err)


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text and '.py", line' not in text, text


async def post_raw(
    api: Client, body: bytes, headers: dict[str, str] | None = None, path: str = "/v1/tasks"
) -> ClientResponse:
    return await api.post(path, data=body, headers={**WRITER, **JSON, **(headers or {})})


async def still_works(api: Client) -> None:
    """The database and the service still answer: submit, read, list."""
    task = await submit_local(api, "true")
    resp = await api.get(f"/v1/tasks/{task['id']}", headers=READER)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["id"] == task["id"]
    resp = await api.get("/v1/tasks?limit=1", headers=READER)
    assert resp.status == 200
    assert (await resp.json())["tasks"][0]["id"] == task["id"]


async def raw_http(api: Client, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes the client library refuses to send; parse status, headers, body."""
    assert api.server.host is not None and api.server.port is not None
    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


# --- 400: malformed JSON and fields ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/tasks/submit"])
async def test_malformed_json(api: Client, path: str) -> None:
    resp = await post_raw(api, b'{"provider": "local", "task": ', path=path)
    await expect_error(resp, 400, code="invalid_request", field="body")


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"a string"', b"null", b"42", b""],
    ids=["list", "string", "null", "number", "empty"],
)
async def test_body_that_is_not_an_object(api: Client, body: bytes) -> None:
    await expect_error(await post_raw(api, body), 400, code="invalid_request", field="body")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"provider": 5}, "provider"),
        ({"provider": ["local"]}, "provider"),
        ({"provider": ""}, "provider"),
        ({"task": "echo hi"}, "task"),
        ({"task": ["echo", "hi"]}, "task"),
        ({"task": None}, "task"),
        ({"labels": {"x": 5}}, "labels.x"),
        ({"labels": {"x": None}}, "labels.x"),
        ({"labels": {"x": "v" * 300}}, "labels.x"),
        ({"labels": ["x"]}, "labels"),
        ({"labels": {"bad key!": "v"}}, "labels.bad key!"),
        ({"timeout_s": "10"}, "timeout_s"),
        ({"timeout_s": True}, "timeout_s"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 10**9}, "timeout_s"),
        ({"name": 5}, "name"),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"colour": "blue"}, "colour"),
        ({"task": {"command": 5}}, "task.command"),
        ({"task": {"command": "true", "args": "x"}}, "task.args"),
        ({"task": {"command": "true", "env": {"A": 1}}}, "task.env.A"),
        ({"task": {"command": "true", "shell": True}}, "task.shell"),
    ],
)
async def test_wrong_field_type(api: Client, change: dict[str, Any], field: str) -> None:
    resp = await api.post("/v1/tasks", json={**GOOD, **change}, headers=WRITER)
    await expect_error(resp, 400, code="invalid_request", field=field)


async def test_missing_provider_and_task(api: Client) -> None:
    resp = await api.post("/v1/tasks", json={"task": {"command": "true"}}, headers=WRITER)
    await expect_error(resp, 400, field="provider")
    resp = await api.post("/v1/tasks", json={"provider": "local"}, headers=WRITER)
    await expect_error(resp, 400, field="task")


@pytest.mark.parametrize("provider", ["nope", "nomad", "Local"])
async def test_unknown_provider(api: Client, provider: str) -> None:
    resp = await api.post("/v1/tasks", json={**GOOD, "provider": provider}, headers=WRITER)
    err = await expect_error(resp, 400, code="invalid_request", field="provider")
    assert provider in err["message"]


# --- 401 / 403 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-the-right-token-at-all"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic d3JpdGVyOnNlY3JldA=="},
        {"Authorization": WRITER["Authorization"].removeprefix("Bearer ")},
        {"Authorization": WRITER["Authorization"] + "x"},
    ],
    ids=["missing", "wrong", "empty", "basic", "no-scheme", "longer"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tasks"),
        ("POST", "/v1/tasks"),
        ("GET", "/v1/tasks/t_x"),
        ("GET", "/v1/tasks/t_x/logs"),
        ("POST", "/v1/tasks/t_x/cancel"),
        ("GET", "/v1/events"),
        ("GET", "/v1/no-such-route"),
    ],
)
async def test_missing_or_wrong_token(
    api: Client, headers: dict[str, str], method: str, path: str
) -> None:
    resp = await api.request(method, path, headers=headers, json=GOOD if method == "POST" else None)
    await expect_error(resp, 401, code="unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_health_needs_no_token(api: Client) -> None:
    assert (await api.get("/healthz")).status == 200
    assert (await api.get("/readyz")).status == 200


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/tasks/submit"])
async def test_reader_cannot_submit(api: Client, path: str) -> None:
    resp = await api.post(path, json=GOOD, headers=READER)
    err = await expect_error(resp, 403, code="forbidden")
    assert "tasks:write" in err["message"]
    listing = await (await api.get("/v1/tasks", headers=READER)).json()
    assert listing["tasks"] == []


async def test_reader_cannot_cancel_and_writer_cannot_prune(api: Client) -> None:
    task = await submit_local(api, "true")
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=READER)
    await expect_error(resp, 403, code="forbidden")
    resp = await api.post("/v1/admin/prune", headers=WRITER)
    await expect_error(resp, 403, code="forbidden")
    assert (await api.post("/v1/admin/prune", headers=ADMIN)).status == 200


# --- 404 / 405 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tasks/t_0123456789abcdef0123456789abcdef"),
        ("GET", "/v1/tasks/t_nope/status"),
        ("GET", "/v1/tasks/t_nope/logs"),
        ("GET", "/v1/tasks/t_nope/events"),
        ("POST", "/v1/tasks/t_nope/cancel"),
        ("DELETE", "/v1/tasks/t_nope"),
        ("GET", "/v1/tasks/t_nope?index=0&wait=5s"),
        ("GET", "/v1/nothing-here"),
    ],
)
async def test_unknown_task_or_route(api: Client, method: str, path: str) -> None:
    start = time.monotonic()
    resp = await api.request(method, path, headers=WRITER)
    await expect_error(resp, 404, code="not_found")
    assert time.monotonic() - start < 2  # a blocking query on an unknown task does not block


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/tasks", {"GET", "POST"}),
        ("PATCH", "/v1/tasks/t_x", {"GET", "DELETE"}),
        ("GET", "/v1/tasks/t_x/cancel", {"POST"}),
        ("PUT", "/v1/tasks/submit", {"POST"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
async def test_wrong_method(api: Client, method: str, path: str, allowed: set[str]) -> None:
    resp = await api.request(method, path, headers=WRITER)
    await expect_error(resp, 405)
    allow = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allowed <= allow, allow


@pytest.mark.parametrize(
    "target",
    [
        b"OPTIONS * HTTP/1.1",
        b"GET //v1//tasks HTTP/1.1",
        b"PROPFIND /v1/tasks HTTP/1.1",
        b"HEAD /nope HTTP/1.1",
    ],
)
async def test_what_no_route_takes_is_still_answered_by_egw(api: Client, target: bytes) -> None:
    """Odd request targets no route takes (the asterisk form too) get egw's answer, not
    aiohttp's plain text: a JSON error (but for HEAD) and a request id."""
    status, headers, body = await raw_http(
        api,
        target
        + b"\r\nHost: t\r\nConnection: close\r\n"
        + f"Authorization: {WRITER['Authorization']}\r\n\r\n".encode(),
    )
    assert status in (404, 405), body
    assert _GENERATED.match(headers["x-request-id"]), headers
    if not target.startswith(b"HEAD"):
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body)["error"]["code"] in ("not_found", "method_not_allowed")


# --- 413 / 415 -------------------------------------------------------------------------------


async def test_body_over_the_limit(aiohttp_client: Callable[..., Any], tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"server": {"max_body_bytes": 1024}})
    api = await aiohttp_client(create_app(cfg))
    big = json.dumps({**GOOD, "name": "n" * 100, "labels": {f"k{i}": "v" * 40 for i in range(40)}})
    assert len(big) > 1024
    resp = await api.post("/v1/tasks", data=big, headers={**WRITER, **JSON})
    await expect_error(resp, 413, code="payload_too_large")
    # just under the limit is fine, and the service still works
    ok = await api.post("/v1/tasks", json={**GOOD, "name": "n" * 100}, headers=WRITER)
    assert ok.status == 202, await ok.text()
    await still_works(api)


async def test_chunked_body_over_the_limit(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    """No Content-Length to check up front: the limit holds while reading."""
    cfg = make_config(tmp_path, {"server": {"max_body_bytes": 1024}})
    api = await aiohttp_client(create_app(cfg))

    async def chunks() -> Any:
        yield b'{"provider": "local", "task": {"command": "true"}, "name": "'
        for _ in range(64):
            yield b"n" * 64
        yield b'"}'

    resp = await api.post("/v1/tasks", data=chunks(), headers={**WRITER, **JSON})
    await expect_error(resp, 413, code="payload_too_large")
    await still_works(api)


@pytest.mark.parametrize(
    "ctype",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "application/xml",
        "multipart/form-data; boundary=x",
    ],
)
async def test_wrong_content_type(api: Client, ctype: str) -> None:
    resp = await api.post(
        "/v1/tasks", data=json.dumps(GOOD), headers={**WRITER, "Content-Type": ctype}
    )
    await expect_error(resp, 415, code="unsupported_media_type")


async def test_no_content_type(api: Client) -> None:
    body = json.dumps(GOOD).encode()
    status, _, raw = await raw_http(
        api,
        b"POST /v1/tasks HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + f"Authorization: {WRITER['Authorization']}\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    assert status == 415, raw
    assert json.loads(raw)["error"]["code"] == "unsupported_media_type"


async def test_json_with_a_charset_is_accepted(api: Client) -> None:
    resp = await api.post(
        "/v1/tasks",
        data=json.dumps(GOOD),
        headers={**WRITER, "Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status == 202, await resp.text()


# --- 400: query values -----------------------------------------------------------------------


@pytest.fixture
async def done(api: Client) -> dict[str, Any]:
    """A task that has succeeded."""
    return await wait_terminal(api, (await submit_local(api, "true"))["id"])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=1.5", "limit"),
        ("cursor=!!!", "cursor"),
        ("cursor=zzzz", "cursor"),
        ("cursor=eDE", "cursor"),  # base64 of "x1": a cursor must be base64 of "s<seq>"
        ("status=done", "status"),
        ("label=novalue", "label"),
        ("label==v", "label"),
    ],
)
async def test_bad_list_query(api: Client, query: str, field: str) -> None:
    resp = await api.get(f"/v1/tasks?{query}", headers=READER)
    await expect_error(resp, 400, code="invalid_request", field=field)


@pytest.mark.parametrize(
    ("suffix", "field"),
    [
        ("?index=-1", "index"),
        ("?index=abc", "index"),
        ("?index=1e3", "index"),
        ("?index=99999999999999999999999", "index"),
        ("?index=0&wait=forever", "wait"),
        ("?index=0&wait=-1s", "wait"),
        ("?index=0&wait=10x", "wait"),
        ("/status?index=-1", "index"),
        ("/logs?stream=x", "stream"),
        ("/logs?stream=STDOUT", "stream"),
        ("/logs?offset=-5", "offset"),
        ("/logs?offset=abc", "offset"),
        ("/logs?follow=perhaps", "follow"),
        ("/logs?follow=1&offset=abc", "offset"),
        ("/logs?follow=1&offset=-1", "offset"),
        ("/events?after=abc", "after"),
        ("/events?limit=0", "limit"),
    ],
)
async def test_bad_task_query(api: Client, done: dict[str, Any], suffix: str, field: str) -> None:
    resp = await api.get(f"/v1/tasks/{done['id']}{suffix}", headers=READER)
    await expect_error(resp, 400, code="invalid_request", field=field)


async def test_bad_last_event_id(api: Client, done: dict[str, Any]) -> None:
    headers = {**READER, "Accept": "text/event-stream", "Last-Event-ID": "abc"}
    resp = await api.get(f"/v1/tasks/{done['id']}/logs", headers=headers)
    await expect_error(resp, 400, code="invalid_request")
    resp = await api.get("/v1/events", headers=headers)
    await expect_error(resp, 400, code="invalid_request")


async def test_bad_force_value(api: Client, done: dict[str, Any]) -> None:
    resp = await api.post(f"/v1/tasks/{done['id']}/cancel?force=maybe", headers=WRITER)
    await expect_error(resp, 400, code="invalid_request", field="force")


@pytest.mark.parametrize("key", ["k" * 256, "k" * 5000])
async def test_idempotency_key_too_long(api: Client, key: str) -> None:
    resp = await api.post("/v1/tasks", json=GOOD, headers={**WRITER, "Idempotency-Key": key})
    await expect_error(resp, 400, code="invalid_request", field="Idempotency-Key")
    assert (await (await api.get("/v1/tasks", headers=READER)).json())["tasks"] == []


# --- hostile input: never a 5xx, never a traceback, and the service keeps working -------------

DEEP = 10_000


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


HOSTILE: dict[str, bytes] = {
    "deep-array-body": _deep(DEEP),
    "deep-object-body": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep-in-task": b'{"provider":"local","task":{"command":"true","args":' + _deep(DEEP) + b"}}",
    "deep-in-labels": b'{"provider":"local","task":{"command":"true"},"labels":{"x":'
    + _deep(DEEP)
    + b"}}",
    "deep-900-in-env": b'{"provider":"local","task":{"command":"true","env":{"A":'
    + b'{"a":' * 900
    + b"1"
    + b"}" * 900
    + b"}}}",
    "nul-in-command": b'{"provider":"local","task":{"command":"tr\\u0000ue"}}',
    "nul-in-args": b'{"provider":"local","task":{"command":"true","args":["a\\u0000b"]}}',
    "nul-in-env": b'{"provider":"local","task":{"command":"true","env":{"A":"\\u0000"}}}',
    "nul-in-cwd": b'{"provider":"local","task":{"command":"true","cwd":"/tmp\\u0000"}}',
    "nul-in-label-key": b'{"provider":"local","task":{"command":"true"},"labels":{"a\\u0000":"b"}}',
    "huge-label-map": json.dumps(
        {**GOOD, "labels": {f"k{i}": "v" for i in range(20_000)}}
    ).encode(),
    "non-utf8-body": b'{"provider":"local","task":{"command":"\xff\xfe\xfd"}}',
    "latin1-body": '{"provider":"local","task":{"command":"caf\u00e9"},"name":"\u00e9"}'.encode(
        "latin-1"
    ),
    "bom-and-garbage": b"\xef\xbb\xbf\x00\x00\x00",
    "huge-integer": b'{"provider":"local","task":{"command":"true"},"timeout_s":'
    + b"9" * 5000
    + b"}",
    "huge-float": b'{"provider":"local","task":{"command":"true"},"timeout_s":1e999}',
    "nan": b'{"provider":"local","task":{"command":"true"},"timeout_s":NaN}',
    "lone-surrogate-command": b'{"provider":"local","task":{"command":"\\ud800"}}',
    "lone-surrogate-name": b'{"provider":"local","task":{"command":"true"},"name":"\\ud800"}',
    "lone-surrogate-label": b'{"provider":"local","task":{"command":"true"},'
    b'"labels":{"a":"\\udfff"}}',
    "lone-surrogate-env": b'{"provider":"local","task":{"command":"true","env":{"A":"\\ud800"}}}',
    "lone-surrogate-provider": b'{"provider":"\\ud800","task":{"command":"true"}}',
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_body(api: Client, name: str) -> None:
    resp = await post_raw(api, HOSTILE[name])
    text = await resp.text(errors="replace")
    assert 400 <= resp.status < 500, f"{resp.status}: {text}"
    await expect_error(resp, resp.status)
    await still_works(api)


async def test_a_hostile_submit_does_not_fail_its_neighbours(api: Client) -> None:
    """Submits are committed in batches: one bad request must not fail the others in its batch."""
    good = json.dumps(GOOD).encode()
    statuses = await asyncio.gather(
        *[post_raw(api, good) for _ in range(10)],
        post_raw(api, HOSTILE["lone-surrogate-name"]),
        *[post_raw(api, good) for _ in range(10)],
    )
    codes = [r.status for r in statuses]
    assert codes[:10] == [202] * 10 and codes[11:] == [202] * 10, codes
    assert 400 <= codes[10] < 500, codes


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_corrupt_compressed_body(api: Client, encoding: str) -> None:
    """A body that says it is compressed but is not: the client's fault, a 400."""
    headers = {"Content-Encoding": encoding, "Connection": "close"}
    resp = await post_raw(api, json.dumps(GOOD).encode(), headers)
    text = await resp.text(errors="replace")
    assert 400 <= resp.status < 500, f"{resp.status}: {text}"
    await expect_error(resp, resp.status)
    await still_works(api)


async def test_compressed_body_is_limited_after_decompression(api: Client) -> None:
    """A gzip bomb: 20 KB on the wire, 20 MiB inflated; the 1 MiB limit holds."""
    inflated = json.dumps({**GOOD, "name": "a" * (20 << 20)}).encode()
    headers = {"Content-Encoding": "gzip", "Connection": "close"}
    resp = await post_raw(api, gzip.compress(inflated), headers)
    await expect_error(resp, 413, code="payload_too_large")
    await still_works(api)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/tasks/..%2F..%2Fetc%2Fpasswd",
        "/v1/tasks/%2e%2e%2f%2e%2e%2f",
        "/v1/tasks/a%2Fb/status",
        "/v1/tasks/..%2F/logs",
        "/v1/tasks/%00",
        "/v1/tasks/%ff%fe",
        "/v1/tasks/" + "x" * 4000,
        "/v1/tasks/t_x%27%20OR%201=1--",
    ],
)
async def test_hostile_task_id_in_path(api: Client, path: str) -> None:
    resp = await api.get(path, headers=READER)
    text = await resp.text(errors="replace")
    assert 400 <= resp.status < 500, text
    await expect_error(resp, resp.status)
    resp = await api.post(
        path.removesuffix("/status").removesuffix("/logs") + "/cancel", headers=WRITER
    )
    assert 400 <= resp.status < 500, await resp.text(errors="replace")
    await still_works(api)


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/tasks/../../etc/passwd",
        b"/v1/tasks/..%2F..%2Fetc",
        b"/v1/tasks/%00/status",
        b"/v1/tasks/./../v1/tasks",
    ],
)
async def test_hostile_raw_path(api: Client, target: str) -> None:
    status, _, body = await raw_http(
        api,
        b"GET "
        + target
        + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + f"Authorization: {READER['Authorization']}\r\n\r\n".encode(),
    )
    assert 400 <= status < 500 or status == 200, body
    assert_no_traceback(body.decode("utf-8", "replace"))
    await still_works(api)


@pytest.mark.parametrize(
    "query",
    [
        "limit=%00",
        "provider=%00&status=failed",
        "label=a%3D%00",
        "label=%22%5D%27=x",
        "cursor=" + "A" * 5000,
        "limit=" + "9" * 5000,
        "status=" + "x" * 2000,
    ],
)
async def test_hostile_query(api: Client, query: str) -> None:
    resp = await api.get(f"/v1/tasks?{query}", headers=READER)
    text = await resp.text()
    assert resp.status in (200, 400), text
    if resp.status == 400:
        await expect_error(resp, 400)
    await still_works(api)


# --- X-Request-ID ----------------------------------------------------------------------------

_GENERATED = re.compile(r"^[0-9a-f]{16}$")  # a per-process prefix and a counter


async def test_request_id_is_echoed(api: Client) -> None:
    for path, headers in (
        ("/healthz", {}),
        ("/v1/tasks", READER),
        ("/v1/tasks/t_x", READER),
        ("/v1/tasks", {}),
    ):
        resp = await api.get(path, headers={**headers, "X-Request-ID": "req-42.a:b_c"})
        assert resp.headers["X-Request-ID"] == "req-42.a:b_c", path


async def test_request_id_is_generated(api: Client) -> None:
    seen = set()
    for path, headers in (("/healthz", {}), ("/v1/tasks", READER), ("/v1/tasks", {})):
        resp = await api.get(path, headers=headers)
        rid = resp.headers["X-Request-ID"]
        assert _GENERATED.match(rid), rid
        seen.add(rid)
    assert len(seen) == 3


@pytest.mark.parametrize(
    "value",
    [
        b"x" * 500,
        b"abc def",
        b"abc%0d%0aSet-Cookie: a=b",
        b"<script>alert(1)</script>",
        "caf\u00e9\u2028x".encode(),
        b"abc\x0bdef",
        b"abc\x7f",
    ],
    ids=["500-chars", "space", "encoded-crlf", "html", "unicode-line-separator", "vtab", "del"],
)
async def test_hostile_request_id_is_replaced(api: Client, value: bytes) -> None:
    status, headers, body = await raw_http(
        api,
        b"GET /v1/tasks HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + f"Authorization: {READER['Authorization']}\r\n".encode()
        + b"X-Request-ID: "
        + value
        + b"\r\n\r\n",
    )
    # the HTTP parser itself refuses some control characters (400); what reaches egw is replaced
    assert status in (200, 400), body
    if status == 200:
        assert _GENERATED.match(headers["x-request-id"]), headers
    assert b"Set-Cookie" not in body and "set-cookie" not in headers


@pytest.mark.parametrize(
    "value", [b"abc\ndef", b"abc\rdef", b"abc\r\n def", b"abc\r\nX-Injected: 1"]
)
async def test_request_id_with_a_newline_never_reaches_a_header(api: Client, value: bytes) -> None:
    status, headers, body = await raw_http(
        api,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Request-ID: "
        + value
        + b"\r\n\r\n",
    )
    rid = headers.get("x-request-id")
    assert rid is None or _GENERATED.match(rid) or rid == "abc", headers
    assert "def" not in (rid or "")
    assert status != 500
    assert_no_traceback(body.decode("utf-8", "replace"))


# --- cancel conflicts ------------------------------------------------------------------------


async def test_cancelling_a_succeeded_task_is_409(api: Client, done: dict[str, Any]) -> None:
    assert done["status"] == "succeeded"
    for method, path in (
        ("POST", f"/v1/tasks/{done['id']}/cancel"),
        ("POST", f"/v1/tasks/{done['id']}/cancel?force=true"),
        ("DELETE", f"/v1/tasks/{done['id']}"),
    ):
        resp = await api.request(method, path, headers=WRITER)
        await expect_error(resp, 409)
        after = await (await api.get(f"/v1/tasks/{done['id']}", headers=READER)).json()
        assert after["status"] == "succeeded"
        assert after["exit_code"] == 0 and after["finished_at"] == done["finished_at"]


async def test_cancelling_a_failed_task_is_409(api: Client) -> None:
    task = await wait_terminal(api, (await submit_local(api, "false"))["id"])
    assert task["status"] == "failed"
    await expect_error(await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER), 409)
    assert (await (await api.get(f"/v1/tasks/{task['id']}", headers=READER)).json())[
        "status"
    ] == "failed"


async def test_cancel_is_idempotent(api: Client) -> None:
    task = await submit_local(api, "sleep", "30")
    first = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert first.status == 202, await first.text()
    assert (await first.json())["status"] in ("cancelling", "cancelled")
    again = await api.delete(f"/v1/tasks/{task['id']}", headers=WRITER)
    assert again.status == 202, await again.text()
    end = await wait_terminal(api, task["id"])
    assert end["status"] == "cancelled"
    late = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert late.status == 202, await late.text()
    assert (await late.json())["status"] == "cancelled"


# --- idempotency -----------------------------------------------------------------------------


async def test_same_idempotency_key_same_body_returns_the_same_task(api: Client) -> None:
    headers = {**WRITER, "Idempotency-Key": "deploy-2026-11-27"}
    body = {**GOOD, "name": "once", "labels": {"a": "1"}}
    first = await api.post("/v1/tasks", json=body, headers=headers)
    assert first.status == 202
    assert "Idempotent-Replayed" not in first.headers
    task = await first.json()
    # the same body, keys in another order, over the original path
    again = await api.post(
        "/v1/tasks/submit",
        data=json.dumps(dict(reversed(list(body.items())))),
        headers={**headers, **JSON},
    )
    assert again.status == 202, await again.text()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == task["id"]
    assert again.headers["Location"] == f"/v1/tasks/{task['id']}"
    listing = await (await api.get("/v1/tasks", headers=READER)).json()
    assert [t["id"] for t in listing["tasks"]] == [task["id"]]


async def test_same_idempotency_key_different_body_is_409(api: Client) -> None:
    headers = {**WRITER, "Idempotency-Key": "k-1"}
    first = await api.post("/v1/tasks", json=GOOD, headers=headers)
    assert first.status == 202
    other = {**GOOD, "task": {"command": "false"}}
    resp = await api.post("/v1/tasks", json=other, headers=headers)
    await expect_error(resp, 409)
    listing = await (await api.get("/v1/tasks", headers=READER)).json()
    assert len(listing["tasks"]) == 1


# --- ETag and blocking queries ---------------------------------------------------------------


async def test_etag_and_if_none_match(api: Client, done: dict[str, Any]) -> None:
    url = f"/v1/tasks/{done['id']}"
    resp = await api.get(url, headers=READER)
    etag = resp.headers["ETag"]
    assert etag == f'"{done["index"]}"'
    for path in (url, url + "/status"):
        for header in (etag, f"W/{etag}", f'"nope", {etag}'):
            cached = await api.get(path, headers={**READER, "If-None-Match": header})
            assert cached.status == 304, header
            assert await cached.read() == b""
            assert cached.headers["ETag"] == etag
    stale = await api.get(url, headers={**READER, "If-None-Match": '"0"'})
    assert stale.status == 200
    assert (await stale.json())["id"] == done["id"]


async def test_etag_changes_when_the_task_does(api: Client) -> None:
    task = await submit_local(api, "sleep", "30")
    url = f"/v1/tasks/{task['id']}"
    first = await api.get(url, headers=READER)
    etag = first.headers["ETag"]
    assert (await api.get(url, headers={**READER, "If-None-Match": etag})).status == 304
    assert (await api.post(url + "/cancel", headers=WRITER)).status == 202
    end = await wait_terminal(api, task["id"])
    resp = await api.get(url, headers={**READER, "If-None-Match": etag})
    assert resp.status == 200
    assert resp.headers["ETag"] == f'"{end["index"]}"' != etag


async def test_blocking_query_waits_when_nothing_changes(api: Client, done: dict[str, Any]) -> None:
    start = time.monotonic()
    resp = await api.get(f"/v1/tasks/{done['id']}?index={done['index']}&wait=1s", headers=READER)
    elapsed = time.monotonic() - start
    assert resp.status == 200
    assert (await resp.json())["index"] == done["index"]
    assert 0.9 <= elapsed < 3, elapsed


async def test_blocking_query_answers_at_once_when_the_index_is_higher(
    api: Client, done: dict[str, Any]
) -> None:
    start = time.monotonic()
    resp = await api.get(
        f"/v1/tasks/{done['id']}?index={done['index'] - 1}&wait=30s", headers=READER
    )
    assert resp.status == 200
    assert (await resp.json())["index"] == done["index"]
    assert time.monotonic() - start < 0.5
    start = time.monotonic()
    resp = await api.get(f"/v1/tasks/{done['id']}/status?index=0&wait=5m", headers=READER)
    assert resp.status == 200
    assert time.monotonic() - start < 0.5


async def test_blocking_query_wakes_on_a_change(api: Client) -> None:
    task = await submit_local(api, sys.executable, "-c", "import time; time.sleep(0.3)")
    start = time.monotonic()
    resp = await api.get(f"/v1/tasks/{task['id']}?index={task['index']}&wait=20s", headers=READER)
    assert resp.status == 200
    assert (await resp.json())["index"] > task["index"]
    assert time.monotonic() - start < 10


async def test_blocking_query_wait_is_capped(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    api = await aiohttp_client(create_app(make_config(tmp_path, {"server": {"max_wait_s": 0.5}})))
    done = await wait_terminal(api, (await submit_local(api, "true"))["id"])
    start = time.monotonic()
    resp = await api.get(f"/v1/tasks/{done['id']}?index={done['index']}&wait=10m", headers=READER)
    assert resp.status == 200
    assert 0.4 <= time.monotonic() - start < 3


# --- listing: pagination and filters ---------------------------------------------------------


async def test_pagination_walks_all_tasks_newest_first(api: Client) -> None:
    ids = [(await submit_local(api, "true", name=f"t{i}"))["id"] for i in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        url = "/v1/tasks?limit=3" + (f"&cursor={cursor}" if cursor else "")
        resp = await api.get(url, headers=READER)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        assert len(page["tasks"]) <= 3
        seen += [t["id"] for t in page["tasks"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert seen == list(reversed(ids))
    assert len(set(seen)) == len(seen)
    assert pages == 3


async def test_pagination_is_stable_while_tasks_are_added(api: Client) -> None:
    ids = [(await submit_local(api, "true"))["id"] for i in range(4)]
    page = await (await api.get("/v1/tasks?limit=2", headers=READER)).json()
    newer = await submit_local(api, "true")
    rest = await (
        await api.get(f"/v1/tasks?limit=10&cursor={page['next_cursor']}", headers=READER)
    ).json()
    assert [t["id"] for t in page["tasks"] + rest["tasks"]] == list(reversed(ids))
    assert newer["id"] not in [t["id"] for t in rest["tasks"]]


async def test_list_filters(api: Client) -> None:
    a1 = await submit_local(api, "true", labels={"team": "a", "env": "prod"})
    b1 = await submit_local(api, "false", labels={"team": "b"})
    a2 = await submit_local(api, "false", labels={"team": "a", "env": "dev"})
    for t in (a1, b1, a2):
        await wait_terminal(api, t["id"])

    async def ids(query: str) -> list[str]:
        resp = await api.get(f"/v1/tasks?{query}", headers=READER)
        assert resp.status == 200, await resp.text()
        return [t["id"] for t in (await resp.json())["tasks"]]

    assert await ids("provider=local") == [a2["id"], b1["id"], a1["id"]]
    assert await ids("provider=nomad") == []
    assert await ids("status=succeeded") == [a1["id"]]
    assert await ids("status=failed") == [a2["id"], b1["id"]]
    assert await ids("status=failed&status=succeeded") == [a2["id"], b1["id"], a1["id"]]
    assert await ids("label=team=a") == [a2["id"], a1["id"]]
    assert await ids("label=team=a&label=env=prod") == [a1["id"]]
    assert await ids("label=team=c") == []
    assert await ids("label=team=a&status=failed") == [a2["id"]]
    assert await ids("label=team=b&provider=local&status=failed") == [b1["id"]]


async def test_a_label_filter_no_label_can_match_is_an_empty_page(
    api: TestClient[web.Request, web.Application],
) -> None:
    """A filter name that is no label name (a NUL, a quote: SQLite refuses it in a JSON
    path) matches nothing; it is not a 500, and other filters are still checked."""
    await submit_local(api, "true", labels={"team": "a"})
    for name in ("E%00Z", "a%22b", "%25%1C"):
        resp = await api.get(f"/v1/tasks?label={name}%3Dx", headers=WRITER)
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"tasks": [], "next_cursor": None}
    bad = await api.get("/v1/tasks?label=E%00Z%3Dx&cursor=%C3%B6", headers=WRITER)
    assert bad.status == 400


async def test_an_empty_cursor_parameter_is_a_400_an_empty_last_event_id_none(
    api: TestClient[web.Request, web.Application],
) -> None:
    task = await submit_local(api, "true")
    await wait_terminal(api, task["id"])
    for path in ("/v1/events?after=", f"/v1/tasks/{task['id']}/logs?offset="):
        resp = await api.get(path, headers={**WRITER, "Accept": "text/event-stream"})
        assert resp.status == 400, path
    events = await api.get(
        f"/v1/tasks/{task['id']}/events", headers={**WRITER, "Last-Event-ID": ""}
    )
    assert events.status == 200 and (await events.json())["events"]


async def test_the_event_stream_checks_the_audit_parameters_too(
    api: TestClient[web.Request, web.Application],
) -> None:
    sse = {**WRITER, "Accept": "text/event-stream"}
    many = "&".join(f"type=k{i}" for i in range(21))
    for query in ("type=Bad!", many, "since=yesterday", "limit=0"):
        resp = await api.get(f"/v1/events?{query}", headers=sse)
        assert resp.status == 400, query
