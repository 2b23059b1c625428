"""The log channel's window: a tailed task's latest output, kept in memory for clients that join.

A crowd joining (or reconnecting to) one task costs one database read, not one
per client; whatever is committed while the window loads is neither lost nor
doubled; a client that asks for older output than the window holds replays
from the database as before.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, sse_frames, submit_local

import egw.service.logwindow
from egw.core.records import LogChunk
from egw.service.logwindow import LogWindow
from egw.web.keys import service_key

Client = TestClient[web.Request, web.Application]
SSE = {**WRITER, "Accept": "text/event-stream"}


def text_of(frames: list[dict[str, str]]) -> str:
    return "".join(json.loads(f["data"])["text"] for f in frames if f.get("event") == "log")


def count_reads(api: Client, before: Callable[[], Awaitable[None]] | None = None) -> list[int]:
    """Wrap the reader's ``logs``: the list gets one offset per call; ``before`` runs
    before the first call's query (to commit something while the window loads)."""
    reader = api.app[service_key].store.reader
    original = reader.logs
    calls: list[int] = []

    async def logs(task_id: str, *, offset: int = 0, **kw: Any) -> list[LogChunk]:
        calls.append(offset)
        if before is not None and len(calls) == 1:
            await before()
        return await original(task_id, offset=offset, **kw)

    reader.logs = logs  # type: ignore[method-assign]
    return calls


async def live_text(
    api: Client, task_id: str, headers: dict[str, str] | None = None
) -> tuple[str, Any]:
    """Open a tail and read until it is live (its status frame): the replayed text."""
    resp = await api.get(f"/v1/tasks/{task_id}/logs", headers={**SSE, **(headers or {})})
    assert resp.status == 200
    frames = await sse_frames(resp, lambda f: f.get("event") == "status")
    return text_of(frames), resp


async def more_text(resp: Any, want: str) -> str:
    got: list[dict[str, str]] = []

    def enough(frame: dict[str, str]) -> bool:
        got.append(frame)
        return want in text_of(got)

    await sse_frames(resp, enough)
    return text_of(got)


async def test_a_crowd_joining_costs_one_read(api: Client) -> None:
    task = await submit_local(api, "sleep", "30")
    service = api.app[service_key]
    for line in (b"one\n", b"two\n", "tr\u00e9s\n".encode()):
        await service.append_log(task["id"], "stdout", line)
    calls = count_reads(api)
    joined = await asyncio.gather(*(live_text(api, task["id"]) for _ in range(30)))
    assert [text for text, _ in joined] == ["one\ntwo\ntr\u00e9s\n"] * 30
    assert len(calls) <= 2, calls  # the window's load: one read, and one that finds the end
    # a client resuming inside the window reads nothing at all
    before = len(calls)
    text, late = await live_text(api, task["id"], {"Last-Event-ID": "4"})
    assert text == "two\ntr\u00e9s\n" and len(calls) == before
    # and every one of them goes on live
    await service.append_log(task["id"], "stdout", b"four\n")
    for _, resp in [*joined, (None, late)]:
        assert await more_text(resp, "four\n") == "four\n"
        resp.close()
    assert (await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)).status == 202


@pytest.mark.parametrize("when", ["before the read", "after the read"])
async def test_output_committed_while_the_window_loads_is_neither_lost_nor_doubled(
    api: Client, when: str
) -> None:
    task = await submit_local(api, "sleep", "30")
    service = api.app[service_key]
    await service.append_log(task["id"], "stdout", b"A\n")
    reader = service.store.reader
    original = reader.logs
    reads = 0

    async def logs(task_id: str, *, offset: int = 0, **kw: Any) -> list[LogChunk]:
        nonlocal reads
        reads += 1
        if reads == 1 and when == "before the read":  # in the read's result and live
            await service.append_log(task_id, "stderr", b"B\n")
        got = await original(task_id, offset=offset, **kw)
        if reads == 1 and when == "after the read":  # only live
            await service.append_log(task_id, "stderr", b"B\n")
        return got

    reader.logs = logs  # type: ignore[method-assign]
    joined = await asyncio.gather(*(live_text(api, task["id"]) for _ in range(5)))
    for text, resp in joined:
        text += await more_text(resp, "B\n") if "B\n" not in text else ""
        assert text == "A\nB\n"
    await service.append_log(task["id"], "stdout", b"C\n")
    for _, resp in joined:
        assert await more_text(resp, "C\n") == "C\n"
        resp.close()
    text, resp = await live_text(api, task["id"])
    assert text == "A\nB\nC\n"
    resp.close()
    assert (await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)).status == 202


async def test_older_output_than_the_window_holds_comes_from_the_database(
    api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(egw.service.logwindow, "WINDOW_BYTES", 40)
    task = await submit_local(api, "sleep", "30")
    service = api.app[service_key]
    lines = [f"line {i:02d} ".encode() + b"x" * 10 + b"\n" for i in range(10)]  # 19 bytes each
    for line in lines:
        await service.append_log(task["id"], "stdout", line)
    everything = b"".join(lines).decode()
    calls = count_reads(api)
    text, first = await live_text(api, task["id"])
    assert text == everything
    loaded = len(calls)
    # the window: the last 40 bytes, from the middle of a chunk
    assert calls[0] == len(everything) - 40
    assert len(calls) > 2  # and the client from 0 read the rest itself
    near_end = len(everything) - 30
    text, second = await live_text(api, task["id"], {"Last-Event-ID": str(near_end)})
    assert text == everything[near_end:]
    assert len(calls) == loaded  # inside the window: from memory
    # live output moves the window on; the first bytes are read from the database again
    await service.append_log(task["id"], "stdout", b"tail\n")
    for resp in (first, second):
        assert await more_text(resp, "tail\n") == "tail\n"
        resp.close()
    before = len(calls)
    text, third = await live_text(api, task["id"], {"Last-Event-ID": "0"})
    assert text == everything + "tail\n" and len(calls) > before
    third.close()
    assert (await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)).status == 202


# --- the window itself, driven directly --------------------------------------------------------


def _chunks(*parts: tuple[str, bytes], at: int = 0) -> list[LogChunk]:
    out = []
    for stream, data in parts:
        out.append(LogChunk("t_w", at, stream, data))
        at += len(data)
    return out


async def test_the_window_merges_a_load_with_live_chunks_and_keeps_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(egw.service.logwindow, "WINDOW_BYTES", 10)
    window = LogWindow()
    a, b, c, d = _chunks(
        ("stdout", b"aaaa"), ("stderr", b"bbbb"), ("stdout", b"cccc"), ("stdout", b"dd")
    )
    # chunks seen live before the load is read are kept only while a load runs
    window.remember(a)
    assert not window.chunks and not window.covers(0)
    window.loading = asyncio.get_running_loop().create_future()
    window.remember(b)
    window.remember(c)
    # the load read a and b (b is also live: counted once), starting inside a
    window.anchor(2, [a, b])
    assert window.start == 2 and window.end == 12
    assert [(x.offset, x.data) for x in window.chunks] == [(2, b"aa"), (4, b"bbbb"), (8, b"cccc")]
    assert window.covers(2) and window.covers(11) and not window.covers(1)
    assert window.after(9, "stdout") == [LogChunk("t_w", 9, "stdout", b"ccc")]
    # a live chunk the load already had changes nothing; a new one moves the window on
    window.remember(c)
    assert window.end == 12 and len(window.chunks) == 3
    window.remember(d)
    assert window.end == 14
    assert window.start == 4  # over 10 bytes: the oldest chunk went
    assert b"".join(x.data for x in window.chunks) == b"bbbbccccdd"
    # a hole (a chunk past the end) leaves no window rather than a wrong one
    window.remember(LogChunk("t_w", 20, "stdout", b"zz"))
    assert window.start is None and not window.covers(14)


async def test_a_load_with_a_hole_leaves_no_window() -> None:
    window = LogWindow()
    a, _, c = _chunks(("stdout", b"aaaa"), ("stdout", b"bbbb"), ("stdout", b"cccc"))
    window.anchor(0, [a, c])
    assert window.start is None and not window.covers(0)
