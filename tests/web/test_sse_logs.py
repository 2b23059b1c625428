"""SSE log tailing: exact bytes, resume with Last-Event-ID, stream filters, fan-out, end event."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, sse_frames, submit_local, wait_terminal

from egw.web.app import create_app
from egw.web.keys import service_key

SSE = {**WRITER, "Accept": "text/event-stream"}

# prints 300 numbered lines on stdout and every 10th on stderr, in small bursts
CHATTY = (
    "import sys, time\n"
    "for i in range(300):\n"
    "    print(f'out {i} ' + 'x' * (i % 7), flush=True)\n"
    "    if i % 10 == 0:\n"
    "        print(f'err {i} é', file=sys.stderr, flush=True)\n"
    "    if i % 25 == 0:\n"
    "        time.sleep(0.01)\n"
)


async def read_frames(resp: Any, limit: int | None = None) -> list[dict[str, str]]:
    """Frames until the stream ends, or until ``limit`` log frames were read."""
    logs = 0

    def stop(frame: dict[str, str]) -> bool:
        nonlocal logs
        logs += frame.get("event") == "log"
        return limit is not None and logs >= limit

    return await sse_frames(resp, stop)


def text_of(frames: list[dict[str, str]]) -> str:
    return "".join(json.loads(f["data"])["text"] for f in frames if f.get("event") == "log")


async def test_exact_bytes_of_a_live_tail(api: TestClient[web.Request, web.Application]) -> None:
    task = await submit_local(api, "sleep", "30")
    service = api.app[service_key]
    await service.append_log(task["id"], "stdout", b"hello\n")
    await service.append_log(task["id"], "stderr", 'caf\u00e9 "q"\n'.encode())
    async with api.get(f"/v1/tasks/{task['id']}/logs", headers=SSE) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-cache"
        head = b""
        while head.count(b"\n\n") < 4:  # the replay, then the task's status: it is live
            head += await resp.content.readany()
        replayed = (
            b"retry: 1000\n\n"
            b'id: 6\nevent: log\ndata: {"stream":"stdout","text":"hello\\n"}\n\n'
            b'id: 16\nevent: log\ndata: {"stream":"stderr","text":"caf\xc3\xa9 \\"q\\"\\n"}\n\n'
        )
        assert head.startswith(replayed)
        assert head[len(replayed) :].startswith(b"event: status\ndata: {")
        assert head.endswith(b"}\n\n") and head.count(b"\n\n") == 4
        # live: the next chunk arrives framed the same way, its id the offset after it
        rest = b""
        await service.append_log(task["id"], "stdout", b"more\n")
        while b"more" not in rest:
            rest += await resp.content.readany()
        assert rest == b'id: 21\nevent: log\ndata: {"stream":"stdout","text":"more\\n"}\n\n'
    cancel = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert cancel.status == 202


async def test_late_client_gets_everything_then_end(
    api: TestClient[web.Request, web.Application],
) -> None:
    task = await submit_local(api, sys.executable, "-c", CHATTY)
    done = await wait_terminal(api, task["id"])
    assert done["status"] == "succeeded"
    plain = await (await api.get(f"/v1/tasks/{task['id']}/logs", headers=WRITER)).text()
    async with api.get(f"/v1/tasks/{task['id']}/logs", headers=SSE) as resp:
        frames = await read_frames(resp)
    assert frames[-1]["event"] == "end"
    assert json.loads(frames[-1]["data"])["status"] == "succeeded"
    assert text_of(frames) == plain
    assert plain.count("\n") == 330


async def test_resume_after_a_dropped_connection_is_exact(
    api: TestClient[web.Request, web.Application],
) -> None:
    task = await submit_local(api, sys.executable, "-c", CHATTY)
    collected: list[dict[str, str]] = []
    last_id: str | None = None
    drops = 0
    while True:
        headers = dict(SSE)
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        async with api.get(f"/v1/tasks/{task['id']}/logs", headers=headers) as resp:
            frames = await read_frames(resp, limit=None if drops >= 3 else 2)
        collected.extend(frames)
        ids = [f["id"] for f in frames if "id" in f]
        last_id = ids[-1] if ids else last_id
        if frames and frames[-1].get("event") == "end":
            break
        drops += 1
    assert drops == 3
    plain = await (await api.get(f"/v1/tasks/{task['id']}/logs", headers=WRITER)).read()
    assert text_of(collected).encode() == plain
    # ids are strictly increasing byte offsets; the last is the size of the output
    offsets = [int(f["id"]) for f in collected if "id" in f]
    assert offsets == sorted(set(offsets))
    assert offsets[-1] == len(plain)


async def test_stream_filter_with_resume(api: TestClient[web.Request, web.Application]) -> None:
    task = await submit_local(api, sys.executable, "-c", CHATTY)
    await wait_terminal(api, task["id"])
    expected = await (
        await api.get(f"/v1/tasks/{task['id']}/logs?stream=stderr", headers=WRITER)
    ).text()
    assert expected.splitlines()[0] == "err 0 é" and len(expected.splitlines()) == 30
    async with api.get(f"/v1/tasks/{task['id']}/logs?stream=stderr", headers=SSE) as resp:
        first = await read_frames(resp, limit=5)
    resume = first[-1]["id"]
    async with api.get(
        f"/v1/tasks/{task['id']}/logs?stream=stderr", headers={**SSE, "Last-Event-ID": resume}
    ) as resp:
        rest = await read_frames(resp)
    assert text_of(first) + text_of(rest) == expected
    assert {json.loads(f["data"])["stream"] for f in first + rest if f.get("event") == "log"} == {
        "stderr"
    }


async def test_many_tailers_share_one_reader_and_agree(
    api: TestClient[web.Request, web.Application],
) -> None:
    task = await submit_local(api, sys.executable, "-c", CHATTY)

    async def tail() -> str:
        async with api.get(f"/v1/tasks/{task['id']}/logs", headers=SSE) as resp:
            return text_of(await read_frames(resp))

    outputs = await asyncio.gather(*(tail() for _ in range(40)))
    plain = await (await api.get(f"/v1/tasks/{task['id']}/logs", headers=WRITER)).text()
    assert all(out == plain for out in outputs)
    # every tailer was served by the one channel of that task, now gone
    from egw.web.keys import log_channels_key

    assert task["id"] not in api.app[log_channels_key]


async def test_status_events_reach_tailers(api: TestClient[web.Request, web.Application]) -> None:
    task = await submit_local(api, "sh", "-c", "sleep 0.3; exit 3")
    async with api.get(f"/v1/tasks/{task['id']}/logs?follow=1", headers=WRITER) as resp:
        frames = await read_frames(resp)
    statuses = [json.loads(f["data"])["status"] for f in frames if f.get("event") == "status"]
    assert statuses[0] == "running" and statuses[-1] == "failed"
    end = json.loads(frames[-1]["data"])
    assert frames[-1]["event"] == "end" and end["status"] == "failed" and end["exit_code"] == 3


async def test_plain_offset(api: TestClient[web.Request, web.Application]) -> None:
    task = await submit_local(api, "printf", "abcdef")
    await wait_terminal(api, task["id"])
    resp = await api.get(f"/v1/tasks/{task['id']}/logs?offset=2", headers=WRITER)
    assert await resp.text() == "cdef"
    assert resp.headers["X-Egw-Offset"] == "6"
    assert resp.headers["X-Egw-Complete"] == "true"


async def test_idle_streams_get_keepalive_comments(aiohttp_client: Any, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"server": {"sse_keepalive_s": 0.1}})
    api = await aiohttp_client(create_app(cfg))
    task = await submit_local(api, "sleep", "30")
    async with api.get(f"/v1/tasks/{task['id']}/logs", headers=SSE) as resp:
        seen = b""
        while b": keepalive\n\n" not in seen:
            seen += await asyncio.wait_for(resp.content.readany(), 5)
    async with api.get("/v1/events", headers=SSE) as resp:
        seen = b""
        while b": keepalive\n\n" not in seen:
            seen += await asyncio.wait_for(resp.content.readany(), 5)
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
