"""Reading a large log costs a bounded amount of gateway memory (issue 11, point 4, and the
SSE half of point 12).

* A read of a log never takes more than its byte budget out of SQLite, however large the
  log: counted as the bytes of every row the reader's queries return.
* SSE clients that never read (real sockets that connect, ask and never read a byte) cost
  at most ``MAX_QUEUED`` queued bytes each in the gateway, during the replay and live; they
  are cut off (the connection reset: the kernel drops what it had queued as well) and
  ``egw_sse_connections`` counts them out at that moment; a client resuming from where it
  got to loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import READER_TOKEN, WRITER, sse_frames, submit_local

from egw.store.reads import Reader
from egw.web import sse
from egw.web.keys import log_channels_key, service_key, ticker_key

pytestmark = pytest.mark.sqlite_only(reason="counts the bytes SQLite's reads return")

Client = TestClient[web.Request, web.Application]

CHUNK = 64 << 10  # what the local runner reads from a pipe at once
TCP_ESTABLISHED, TCP_CLOSE = 1, 7


def output(size: int) -> bytes:
    """Recognisable output: numbered lines, so any gap or repeat shows."""
    lines = b"".join(b"line %07d %s\n" % (i, b"x" * 50) for i in range(size // 64 + 1))
    return lines[:size]


async def append(api: Client, task_id: str, data: bytes) -> None:
    service = api.app[service_key]
    for at in range(0, len(data), CHUNK):
        await service.append_log(task_id, "stdout", data[at : at + CHUNK])


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes of log data each query of the reader returned, one entry per query."""
    sizes: list[int] = []
    original = Reader._all

    async def counting(self: Reader, sql: str, params: Any = ()) -> list[Any]:
        rows = await original(self, sql, params)
        if "log_chunks" in sql:
            sizes.append(sum(len(v) for r in rows for v in r if isinstance(v, bytes)))
        return rows

    monkeypatch.setattr(Reader, "_all", counting)
    return sizes


async def test_a_plain_read_of_a_large_log_takes_one_mib_at_a_time_from_sqlite(
    api: Client, fetched: list[int]
) -> None:
    task = await submit_local(api, "sleep", "30")
    data = output(12 << 20)
    await append(api, task["id"], data)
    fetched.clear()
    resp = await api.get(f"/v1/tasks/{task['id']}/logs", headers=WRITER)
    assert resp.status == 200 and await resp.read() == data
    assert sum(fetched) == len(data)  # every byte once,
    assert max(fetched) <= 1 << 20  # and never more than 1 MiB in one query
    # from inside a chunk, and a chunk larger than the budget is cut in SQL too
    fetched.clear()
    resp = await api.get(f"/v1/tasks/{task['id']}/logs?offset={CHUNK + 5}", headers=WRITER)
    assert await resp.read() == data[CHUNK + 5 :]
    big = await submit_local(api, "sleep", "30")
    await api.app[service_key].append_log(big["id"], "stdout", data[: 3 << 20])
    fetched.clear()
    resp = await api.get(f"/v1/tasks/{big['id']}/logs?offset=7", headers=WRITER)
    assert await resp.read() == data[7 : 3 << 20]
    assert max(fetched) <= 1 << 20
    for t in (task, big):
        await api.post(f"/v1/tasks/{t['id']}/cancel", headers=WRITER)


async def silent_client(api: Client, path: str) -> tuple[socket.socket, asyncio.StreamWriter]:
    """A real connection that asks for an event stream and never reads a byte (a tiny
    receive buffer, so the kernel takes little of what the gateway sends)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    assert api.server.port is not None
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", api.server.port))
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: egw\r\nAuthorization: Bearer {READER_TOKEN}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    return sock, writer


def tcp_state(sock: socket.socket) -> int:
    state: int = struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]
    return state


async def watch(api: Client, until: Callable[[], bool], timeout_s: float) -> int:
    """Until ``until()``: the most bytes queued for one SSE client in the gateway."""
    channels = api.app[log_channels_key]
    most = 0
    async with asyncio.timeout(timeout_s):
        while not until():
            for channel in list(channels._open.values()):
                for stream in channel.all_streams():
                    transport = stream.transport  # type: ignore[attr-defined]
                    if transport is not None:
                        most = max(most, transport.get_write_buffer_size())
            await asyncio.sleep(0.005)
    return most


async def closed_when_counted_out(
    api: Client, socks: list[socket.socket], work: Awaitable[None]
) -> int:
    """Run ``work`` while watching; once ``egw_sse_connections`` reads 0, every client's
    connection is gone (reset) right then. The most bytes queued for one client."""
    ticker = api.app[ticker_key]
    job = asyncio.ensure_future(work)
    most = await watch(api, lambda: job.done() and ticker.stream_count() == 0, 20)
    await job
    await asyncio.sleep(0.05)  # the aborted sockets close on the loop's next turn
    assert [tcp_state(s) for s in socks] == [TCP_CLOSE] * len(socks)
    return most


async def test_clients_that_never_read_the_replay_are_bounded_then_cut_off(
    api: Client, fetched: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "STALL_S", 0.5)
    task = await submit_local(api, "sleep", "30")
    data = output(12 << 20)
    await append(api, task["id"], data)
    fetched.clear()
    clients = [await silent_client(api, f"/v1/tasks/{task['id']}/logs") for _ in range(10)]
    most = await closed_when_counted_out(api, [s for s, _ in clients], asyncio.sleep(0.2))
    assert most <= sse.MAX_QUEUED
    # each replay read its log a bounded piece at a time, and read only what it sent
    assert max(fetched) <= 1 << 20 and sum(fetched) < 10 * (6 << 20)
    await resume_exactly(api, task["id"], 5 << 20, data)
    for _, writer in clients:
        writer.close()


async def test_live_tailers_that_never_read_are_cut_off_and_counted_out_when_gone(
    api: Client,
) -> None:
    task = await submit_local(api, "sleep", "30")
    clients = [await silent_client(api, f"/v1/tasks/{task['id']}/logs") for _ in range(10)]
    ticker = api.app[ticker_key]
    await watch(api, lambda: ticker.stream_count() == 10, 5)
    await asyncio.sleep(0.1)  # live: their replay (of nothing) is done
    data = output(12 << 20)
    most = await closed_when_counted_out(
        api, [s for s, _ in clients], append(api, task["id"], data)
    )
    assert most <= sse.MAX_QUEUED
    await resume_exactly(api, task["id"], 3 << 20, data)
    for _, writer in clients:
        writer.close()


async def resume_exactly(api: Client, task_id: str, at: int, data: bytes) -> None:
    """A client resuming at byte ``at`` gets the rest of ``data``, nothing lost or doubled."""
    got = bytearray()

    def until_all(frame: dict[str, str]) -> bool:
        if frame.get("event") == "log":
            got.extend(json.loads(frame["data"])["text"].encode())
        return len(got) >= len(data) - at

    headers = {**WRITER, "Accept": "text/event-stream", "Last-Event-ID": str(at)}
    async with api.get(f"/v1/tasks/{task_id}/logs", headers=headers) as resp:
        await sse_frames(resp, until_all)
    assert bytes(got) == data[at:]
    await api.post(f"/v1/tasks/{task_id}/cancel", headers=WRITER)
