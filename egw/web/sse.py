"""Server-sent events on the HTTP side: SSE framing, and the responses that carry live streams.

The fan-out engine (which client gets which frame, when) is `egw.service.ticker`
and `egw.service.channels`; this module gives it its bytes (`SSEFraming`) and
its clients (`SSEStream`).

The response uses HTTP/1.1 chunked encoding (aiohttp's default for a stream
without a length): the replay goes through aiohttp's writer, live frames are
framed as chunks here (`SSEFraming.write`) and written straight to the client's
transport, and the final ``0`` chunk is aiohttp's ``write_eof``. A client whose
socket buffer grows past ``MAX_BUFFER`` is cut off; it resumes with
``Last-Event-ID`` and loses nothing.

SSE framing follows the WHATWG spec: ``id:``, ``event:``, ``data:`` lines
and a blank line; a line starting with ``:`` is a comment (keep-alive).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from egw.core.model import Event, Task
from egw.core.records import LogChunk
from egw.service.ticker import Channel

MAX_BUFFER = 1 << 20  # bytes queued in one client's socket before it is dropped
KEEPALIVE = b": keepalive\n\n"


def encode(event: str | None, data: Any, id: str | int | None = None) -> bytes:
    """One SSE frame; ``data`` is sent as compact JSON on one line."""
    out = []
    if id is not None:
        out.append(f"id: {id}\n")
    if event is not None:
        out.append(f"event: {event}\n")
    text = (
        data
        if isinstance(data, str)
        else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    )
    out.extend(f"data: {line}\n" for line in text.split("\n"))
    out.append("\n")
    return "".join(out).encode()


def log_frame(chunk: LogChunk) -> bytes:
    return encode(
        "log", {"stream": chunk.stream, "text": chunk.data.decode("utf-8", "replace")}, chunk.end
    )


def status_frame(task: Task) -> bytes:
    return encode("status", task.to_json())


def end_frame(task: Task) -> bytes:
    return encode(
        "end",
        {
            "status": str(task.status),
            "exit_code": task.exit_code,
            "reason": task.reason,
            "task": task.to_json(),
        },
    )


def event_frame(event: Event) -> bytes:
    """``event: status`` for an event that moved the task, ``event: event`` for the rest
    (stale reports, progress of jobs and steps, upstream ids); ``id:`` is the sequence."""
    return encode("status" if event.applied else "event", event.to_json(), event.seq)


def http_chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk (RFC 9112 §7.1): the size in hex, the bytes."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


class SSEFraming:
    """The fan-out engine's `egw.service.ticker.Framing`: SSE frames, written as HTTP chunks."""

    log = staticmethod(log_frame)
    status = staticmethod(status_frame)
    end = staticmethod(end_frame)
    event = staticmethod(event_frame)
    write = staticmethod(http_chunk)

    @staticmethod
    def keepalive() -> bytes:
        return KEEPALIVE


def sse_headers() -> dict[str, str]:
    return {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        # nginx would otherwise buffer the stream
        "X-Accel-Buffering": "no",
    }


class SSEStream:
    """One client's open event stream (slots: thousands of these stay open at once);
    the engine's `egw.service.ticker.Stream`."""

    __slots__ = ("__weakref__", "backlog", "done", "response", "transport")

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.response = response
        self.transport = request.transport
        # what arrives during the replay; LIVE (no list of its own) once live
        self.backlog: list[Any] | tuple[()] = []
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def hold(self, item: Any) -> None:
        """Keep what arrived during the replay (only a stream still replaying is given any)."""
        backlog = self.backlog
        assert isinstance(backlog, list), "a live stream holds nothing"
        backlog.append(item)

    async def write(self, data: bytes) -> None:
        """Write through aiohttp (replay, first bytes); may wait for the socket."""
        if data:
            await self.response.write(data)

    def push(self, chunk: bytes) -> bool:
        """Write one pre-framed HTTP chunk now; False (and finish) if the client is gone or slow."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.finish("closed")
            return False
        if transport.get_write_buffer_size() > MAX_BUFFER:
            transport.close()
            self.finish("slow")
            return False
        transport.write(chunk)
        return True

    def finish(self, why: str) -> None:
        if not self.done.done():
            self.done.set_result(why)


class SSEResponse(web.StreamResponse):
    """A live event stream that outlives its handler.

    The handler replays, goes live, calls `hand_off` and returns; aiohttp then
    calls `write_eof`, which waits here until the stream ends. So an idle tailer
    keeps no handler or edge frames alive: thousands of them cost only
    their connection, their response and their `SSEStream`.
    """

    def __init__(self, *, headers: dict[str, str]) -> None:
        super().__init__(headers=headers)
        # the live stream and the channel it leaves when it ends (no closure: thousands
        # of these are open at once, and a lambda and its cell cost 200 bytes each)
        self._stream: SSEStream | None = None
        self._channel: Channel | None = None

    def hand_off(self, stream: SSEStream, channel: Channel) -> None:
        self._stream, self._channel = stream, channel

    async def write_eof(self, data: bytes = b"") -> None:
        stream, channel = self._stream, self._channel
        self._stream = self._channel = None
        if stream is not None and channel is not None:
            try:
                await stream.done
            finally:
                channel.remove(stream)
        try:
            await super().write_eof(data)
        except ConnectionResetError:
            pass  # the client is gone: there is no one to end the stream for


async def serve_stream(
    resp: SSEResponse,
    stream: SSEStream,
    replay: Callable[[], Awaitable[None]],
    channel: Channel,
) -> SSEResponse:
    """Run a stream's replay, then hand the live stream off to the response; the stream
    leaves ``channel`` however it ends: now if the replay fails, else at its end."""
    try:
        await replay()
    except ConnectionResetError:  # the client left during the replay
        channel.remove(stream)
        return resp
    except BaseException:
        channel.remove(stream)
        raise
    resp.hand_off(stream, channel)
    return resp
