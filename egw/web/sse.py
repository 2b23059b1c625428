"""Server-sent events on the HTTP side: SSE framing, and the responses that carry live streams.

The fan-out engine (which client gets which frame, when) is `egw.service.ticker`
and `egw.service.channels`; this module gives it its bytes (`SSEFraming`) and
its clients (`SSEStream`).

Framing follows the response's actual transfer encoding. Over HTTP/1.1 the
response is chunked (aiohttp's default for a stream without a length): the
replay goes through aiohttp's writer, live frames are framed as one HTTP chunk
per group of clients (`SSEFraming.write`) and that same bytes object is written
straight to each client's transport, and the final ``0`` chunk is aiohttp's
``write_eof``. That pre-chunked write is what keeps thousands of tailers cheap
(one framing per group and tick, no copy and no coroutine per client): it is
the reason for the SSE bench figures, so it stays. Over HTTP/1.0 (``curl
--http1.0``, nginx's default ``proxy_http_version``) there is no chunked
encoding: the stream writes the plain SSE bytes and ends by closing the
connection (aiohttp answers such a response with ``keep_alive`` off).

Each client has a budget of ``MAX_QUEUED`` bytes queued for it in the gateway:
in its transport's buffer, and in its backlog while it replays. A client over
it is cut off: its transport is aborted with ``SO_LINGER`` 0, so the kernel
drops what it had queued too, and it leaves its channel at once (and
``egw_sse_connections``); it resumes with ``Last-Event-ID`` and loses nothing.
The replay is written in ``PIECE`` pieces, each waiting for the socket to drain;
a client that takes no piece for ``STALL_S`` seconds is cut off as well.

SSE framing follows the WHATWG spec: ``id:``, ``event:``, ``data:`` lines
and a blank line; a line starting with ``:`` is a comment (keep-alive).
Output that is UTF-8 is sent as it is (``event: log``, JSON text); bytes that
are not are sent in base64 (``event: log-b64``), so nothing is replaced or lost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from egw.core.model import Event, Task
from egw.core.records import LogChunk
from egw.service.ticker import Channel

MAX_QUEUED = 1 << 20  # bytes queued for one client in the gateway before it is cut off
PIECE = 64 << 10  # the replay is written in pieces of this size, each waiting for the socket
STALL_S = 30.0  # a replaying client that takes no piece for this long is cut off
KEEPALIVE = b": keepalive\n\n"
_LINGER_0 = struct.pack("ii", 1, 0)  # close with a reset: the kernel drops what is queued


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
    """The frames of one chunk of output; each frame's ``id:`` is the byte offset after it.

    UTF-8 (the usual case) is one ``event: log`` frame, its text as it is. Bytes that
    are not UTF-8 are one ``event: log-b64`` frame with the bytes in base64: nothing
    replaced, a third larger. A character cut between two chunks (output is stored as
    it was read) only sends its cut pieces in base64 and the rest of the chunk as text.
    """
    data = chunk.data
    try:
        return _text(chunk.stream, data.decode(), chunk.end)
    except UnicodeDecodeError:
        pass
    start, end = _continuation(data), len(data) - _unfinished(data)
    try:
        text = data[start:end].decode() if start < end else None
    except UnicodeDecodeError:
        text = None
    if text is None:
        return _binary(chunk.stream, data, chunk.end)
    at = chunk.offset
    frames = []
    if start:
        frames.append(_binary(chunk.stream, data[:start], at + start))
    frames.append(_text(chunk.stream, text, at + end))
    if end < len(data):
        frames.append(_binary(chunk.stream, data[end:], chunk.end))
    return b"".join(frames)


def _text(stream: str, text: str, end: int) -> bytes:
    return encode("log", {"stream": stream, "text": text}, end)


def _binary(stream: str, data: bytes, end: int) -> bytes:
    return encode("log-b64", {"stream": stream, "base64": base64.b64encode(data).decode()}, end)


def _continuation(data: bytes) -> int:
    """How many bytes at the start continue a character begun before (at most 3)."""
    n = 0
    while n < min(3, len(data)) and data[n] & 0xC0 == 0x80:
        n += 1
    return n


def _unfinished(data: bytes) -> int:
    """How many bytes at the end begin a character that the next chunk finishes (0-3)."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for its lead byte
        if byte < 0xC0:
            return 0  # ASCII: every character before the end is whole
        need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
        return back if need > back else 0
    return 0


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
    """The fan-out engine's `egw.service.ticker.Framing`: SSE frames, and the same as one
    HTTP/1.1 chunk (each stream writes the one its response's transfer encoding needs)."""

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
    the engine's `egw.service.ticker.Stream`. Create it once its response is prepared."""

    __slots__ = ("__weakref__", "backlog", "chunked", "done", "held", "response", "transport")

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.response = response
        self.transport = request.transport
        # whether the response is chunked (HTTP/1.1), as aiohttp prepared it
        self.chunked = response.headers.get("Transfer-Encoding") == "chunked"
        # what arrives during the replay; LIVE (no list of its own) once live
        self.backlog: list[Any] | tuple[()] = []
        self.held = 0  # bytes in the backlog
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def hold(self, item: Any, size: int) -> None:
        """Keep what arrived during the replay (only a stream still replaying is given any);
        a backlog past the budget cuts the client off (it resumes from where it got to)."""
        backlog = self.backlog
        assert isinstance(backlog, list), "a live stream holds nothing"
        if self.done.done():
            return
        self.held += size
        if self.held > MAX_QUEUED:
            backlog.clear()
            self.cut_off("slow")
            return
        backlog.append(item)

    async def write(self, data: bytes) -> None:
        """Write through aiohttp (replay, first bytes) in pieces, each waiting for the socket
        to drain; `ConnectionResetError` if the client is gone or took nothing for
        ``STALL_S`` (it is cut off then)."""
        view = memoryview(data)
        for at in range(0, len(view), PIECE):
            if self.done.done():
                raise ConnectionResetError("the stream was cut off")
            try:
                async with asyncio.timeout(STALL_S):
                    await self.response.write(view[at : at + PIECE])
            except TimeoutError:
                self.cut_off("stalled")
                raise ConnectionResetError("the client took nothing") from None

    def push(self, frames: bytes, chunk: bytes) -> bool:
        """Write frames now: ``chunk`` (the same, as an HTTP/1.1 chunk) if the response is
        chunked, else ``frames``. False (and finish) if the client is gone, or over the budget
        (then it is cut off)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.finish("closed")
            return False
        transport.write(chunk if self.chunked else frames)
        if transport.get_write_buffer_size() > MAX_QUEUED:
            self.cut_off("slow")
            return False
        return True

    def cut_off(self, why: str) -> None:
        """Close the connection now, dropping what is queued for it here and in the kernel
        (a plain close would wait, forever for a client that never reads), and finish."""
        transport = self.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
            transport.abort()
        self.finish(why)

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
