"""Issue point 12 (the protocol part): what aiohttp's parser refuses is answered in egw's
JSON error shape, ``If-None-Match: *`` is a 304 for a task that exists (RFC 9110
§13.1.2), and a request framed ``Transfer-Encoding: gzip, chunked`` is refused with a 501
(RFC 9112 §6.1) instead of being read as plain chunked.

Requests a client library refuses to send go over raw sockets.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import READER, READER_TOKEN, WRITER_TOKEN, submit_local, wait_terminal

from egw.config import Config
from egw.web.app import create_app
from egw.web.protocol import EdgeRunner

Client = TestClient[web.Request, web.Application]


async def exchange(host: str, port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request``; read the answer until the server closes (or 5 s)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return int(lines[0].split()[1]), headers, body


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, body = out + rest[:n], rest[n + 2 :]
    return out


def error_of(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert "Traceback" not in body.decode(errors="replace")
    return dict(error)


# --- protocol-level errors: EdgeRunner --------------------------------------------------------


@pytest.fixture
async def served(cfg: Config) -> AsyncIterator[tuple[str, int]]:
    """The app behind `EdgeRunner`, on a loopback port, as `egw serve` runs it."""
    runner = EdgeRunner(create_app(cfg), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield host, port
    await runner.cleanup()


def request(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


HOST = b"Host: t"
AUTH = f"Authorization: Bearer {READER_TOKEN}".encode()

BAD = {
    "header too long": request(b"GET /v1/tasks HTTP/1.1", HOST, b"X-Big: " + b"a" * 9000),
    "request line too long": request(b"GET /" + b"a" * 9000 + b" HTTP/1.1", HOST),
    "too many headers": request(
        b"GET /v1/tasks HTTP/1.1", HOST, *(b"X-H%d: v" % i for i in range(200))
    ),
    "unknown method": request(b"G@T /v1/tasks HTTP/1.1", HOST),
    "trailing junk on the request line": request(b"GET /v1/tasks HTTP/1.1 x", HOST),
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to a plain port
    "bad version": request(b"GET /v1/tasks HTTP/9.x", HOST),
    "bad header name": request(b"GET /v1/tasks HTTP/1.1", HOST, b"Bad@Name\x01: v"),
    "content-length and chunked": request(
        b"POST /v1/tasks HTTP/1.1",
        HOST,
        b"Content-Length: 5",
        b"Transfer-Encoding: chunked",
        body=b"0\r\n\r\n",
    ),
    "two content-lengths": request(
        b"POST /v1/tasks HTTP/1.1", HOST, b"Content-Length: 1", b"Content-Length: 2", body=b"xy"
    ),
    "bad content-length": request(b"POST /v1/tasks HTTP/1.1", HOST, b"Content-Length: -1"),
}


@pytest.mark.parametrize("name", sorted(BAD))
async def test_protocol_errors_are_json(served: tuple[str, int], name: str) -> None:
    status, headers, body = await exchange(*served, BAD[name])
    error = error_of(status, headers, body, 400)
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("the request is not valid HTTP")
    # and the connection is closed: exchange() read to its end


async def test_bad_chunk_framing_is_json(served: tuple[str, int]) -> None:
    """Framing that breaks in the body is found while the handler reads it: the edge's 400."""
    raw = request(
        b"POST /v1/tasks HTTP/1.1",
        HOST,
        f"Authorization: Bearer {WRITER_TOKEN}".encode(),
        b"Content-Type: application/json",
        b"Transfer-Encoding: chunked",
        body=b"zz\r\n{}\r\n0\r\n\r\n",
    )
    status, headers, body = await exchange(*served, raw)
    assert error_of(status, headers, body, 400)["code"] == "invalid_request"


async def test_edge_runner_serves_as_before(served: tuple[str, int], cfg: Config) -> None:
    status, headers, body = await exchange(
        *served, request(b"GET /v1/tasks HTTP/1.1", HOST, AUTH, b"Connection: close")
    )
    assert status == 200, body
    assert json.loads(body) == {"tasks": [], "next_cursor": None}
    status, headers, body = await exchange(
        *served, request(b"GET /nowhere HTTP/1.1", HOST, b"Connection: close")
    )
    assert error_of(status, headers, body, 404)["code"] == "not_found"


async def test_a_protocol_error_after_a_good_request_on_one_connection(
    served: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*served)
    writer.write(request(b"GET /healthz HTTP/1.1", HOST))
    first = await asyncio.wait_for(reader.readuntil(b"}"), 5)  # /healthz answers JSON
    assert first.startswith(b"HTTP/1.1 200"), first
    writer.write(request(b"G@T / HTTP/1.1", HOST))
    second = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert b" 400 " in second and b"application/json" in second, second
    assert b'"invalid_request"' in second, second


# --- If-None-Match: * -------------------------------------------------------------------------


async def test_if_none_match_star_is_304_when_the_task_exists(api: Client) -> None:
    task = await wait_terminal(api, (await submit_local(api, "true"))["id"])
    for path in (f"/v1/tasks/{task['id']}", f"/v1/tasks/{task['id']}/status"):
        for header in ("*", ' "nope" , *'):
            resp = await api.get(path, headers={**READER, "If-None-Match": header})
            assert resp.status == 304, (header, await resp.text())
            assert resp.headers["ETag"] == f'"{task["index"]}"'
            assert await resp.read() == b""


async def test_if_none_match_star_on_a_missing_task_is_404(api: Client) -> None:
    resp = await api.get("/v1/tasks/t_nope", headers={**READER, "If-None-Match": "*"})
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


# --- Transfer-Encoding other than chunked -----------------------------------------------------


def chunked(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(payload), payload)


SUBMIT = b'{"provider": "local", "task": {"command": "true"}}'


@pytest.mark.parametrize(
    "coding",
    [
        b"gzip, chunked",
        b"deflate,chunked",
        b"GZIP , Chunked",
        b"chunked, chunked",
        b"identity, chunked",
    ],
)
async def test_transfer_codings_other_than_chunked_are_501(api: Client, coding: bytes) -> None:
    assert api.server.host is not None and api.server.port is not None
    payload = gzip.compress(SUBMIT) if b"zip" in coding.lower() else SUBMIT
    raw = request(
        b"POST /v1/tasks HTTP/1.1",
        HOST,
        f"Authorization: Bearer {WRITER_TOKEN}".encode(),
        b"Content-Type: application/json",
        b"Transfer-Encoding: " + coding,
        body=chunked(payload),
    )
    status, headers, body = await exchange(api.server.host, api.server.port, raw)
    if coding == b"chunked, chunked":  # llhttp refuses it itself; aiohttp's Python parser not
        assert status in (400, 501), body
        return
    error = error_of(status, headers, body, 501)
    assert error["code"] == "not_implemented"
    assert headers.get("connection", "").lower() == "close"
    # nothing was submitted
    listed = await api.get("/v1/tasks", headers=READER)
    assert (await listed.json())["tasks"] == []


async def test_two_transfer_encoding_lines_are_refused(api: Client) -> None:
    assert api.server.host is not None and api.server.port is not None
    raw = request(
        b"POST /v1/tasks HTTP/1.1",
        HOST,
        f"Authorization: Bearer {WRITER_TOKEN}".encode(),
        b"Content-Type: application/json",
        b"Transfer-Encoding: gzip",
        b"Transfer-Encoding: chunked",
        body=chunked(gzip.compress(SUBMIT)),
    )
    status, _, body = await exchange(api.server.host, api.server.port, raw)
    assert status in (400, 501), body
    listed = await api.get("/v1/tasks", headers=READER)
    assert (await listed.json())["tasks"] == []


async def test_plain_chunked_is_still_taken(api: Client) -> None:
    assert api.server.host is not None and api.server.port is not None
    raw = request(
        b"POST /v1/tasks HTTP/1.1",
        HOST,
        f"Authorization: Bearer {WRITER_TOKEN}".encode(),
        b"Content-Type: application/json",
        b"Transfer-Encoding: Chunked",
        b"Connection: close",
        body=chunked(SUBMIT),
    )
    status, _, body = await exchange(api.server.host, api.server.port, raw)
    assert status == 202, body
