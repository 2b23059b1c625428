"""SSE over HTTP/1.0 is well formed (issue 11, point 10).

HTTP/1.0 has no chunked encoding (``curl --http1.0``, and nginx's default
``proxy_http_version``), so the body is the plain event stream, replay and live
frames alike, ended by closing the connection. Read here from a raw socket and
parsed exactly: every line of the body must be an SSE line.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import TestClient
from support import READER_TOKEN, WRITER, submit_local

from egw.web.keys import service_key

Client = TestClient[web.Request, web.Application]

FIELDS = {"id", "event", "data", "retry"}


async def ask(api: Client, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.server.port)
    writer.write(
        f"GET {path} HTTP/1.0\r\nHost: egw\r\nAuthorization: Bearer {READER_TOKEN}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return reader, writer


async def read_until(reader: asyncio.StreamReader, got: bytearray, marker: bytes) -> None:
    async with asyncio.timeout(10):
        while marker not in got:
            more = await reader.read(65536)
            assert more, f"the stream ended before {marker!r}: {bytes(got)!r}"
            got += more


def parse(response: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """The head's lines, and the body's frames; fails on any line that is not SSE."""
    head, sep, body = response.partition(b"\r\n\r\n")
    assert sep, response
    frames: list[dict[str, str]] = []
    frame: dict[str, str] = {}
    text = body.decode()
    assert text.endswith("\n\n"), text[-200:]
    for line in text.split("\n")[:-1]:
        if not line:
            if frame:
                frames.append(frame)
            frame = {}
        elif not line.startswith(":"):
            name, colon, value = line.partition(": ")
            assert colon and name in FIELDS, f"not an SSE line: {line!r}"
            frame[name] = value
    return head.decode().split("\r\n"), frames


async def test_log_and_event_streams_over_http_1_0_are_plain_sse_ended_by_close(
    api: Client,
) -> None:
    task = await submit_local(api, "sleep", "30")
    service = api.app[service_key]
    await service.append_log(task["id"], "stdout", b"before\n")
    logs, logs_w = await ask(api, f"/v1/tasks/{task['id']}/logs")
    events, events_w = await ask(api, f"/v1/tasks/{task['id']}/events")
    got_logs, got_events = bytearray(), bytearray()
    await read_until(logs, got_logs, b"event: status\n")  # replayed, and live
    await read_until(events, got_events, b'"status":"running"')
    live = [f"live {i} {'é' * i}\n".encode() for i in range(50)]
    for part in live:
        await service.append_log(task["id"], "stderr", part)
    assert (await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)).status == 202
    async with asyncio.timeout(10):  # the log stream ends with the task: the server closes
        got_logs += await logs.read()
    head, frames = parse(bytes(got_logs))
    assert head[0] == "HTTP/1.0 200 OK"
    assert not any(h.lower().startswith("transfer-encoding") for h in head)
    assert "Content-Type: text/event-stream; charset=utf-8" in head
    text = "".join(json.loads(f["data"])["text"] for f in frames if f.get("event") == "log")
    assert text.encode() == b"before\n" + b"".join(live)
    assert frames[-1]["event"] == "end"
    assert json.loads(frames[-1]["data"])["status"] == "cancelled"
    # the event stream (it does not end by itself): live frames, plain, up to the end state
    await read_until(events, got_events, b'"status":"cancelled"')
    await read_until(events, got_events, b"\n\n")
    _, frames = parse(bytes(got_events[: got_events.rindex(b"\n\n") + 2]))
    assert [json.loads(f["data"])["status"] for f in frames if f.get("event") == "status"][-1] == (
        "cancelled"
    )
    for w in (logs_w, events_w):
        w.close()
