"""Server-sent events: framing, and fan-out of live frames to many clients.

Theory of operation
-------------------
A task's output may be tailed by thousands of clients at once. A coroutine
and a queue per client (the usual pattern) collapses at about a thousand
subscribers on one core. Instead, live output is *batched per tick*:

* The hub hands each committed log chunk and status event to one `LogChannel`
  per task (and one `EventChannel` for ``/v1/events``); the channel only
  appends it to a pending list.
* Every ``flush_ms`` the `Ticker` asks each dirty channel to frame its pending
  items once per *group* of identical clients (for logs: all streams, stdout
  only, stderr only) and writes that one pre-framed HTTP chunk straight to
  each client's transport: no coroutine, no copy per client.
* A new client first replays (``Last-Event-ID`` or ``offset``) while live
  items pile up in its own backlog; once the replay is done it drains the
  backlog (skipping what the replay already covered, by offset or sequence)
  and joins its group. Both steps run on the one event loop, so nothing falls
  between them and nothing is sent twice.
* A log channel keeps its task's latest output (``WINDOW_BYTES``) in memory:
  loaded from the database once, when the channel opens, then extended by
  every live chunk. A client that resumes inside that window replays from
  memory, without a query and without waiting, so a reconnecting crowd costs
  one read, not one per client (and no thousand suspended handlers at once,
  whose memory the process would keep).

The response uses HTTP/1.1 chunked encoding (aiohttp's default for a stream
without a length): the replay goes through aiohttp's writer, live frames are
framed as chunks here, and the final ``0`` chunk is aiohttp's ``write_eof``.
A client whose socket buffer grows past ``MAX_BUFFER`` is cut off; it resumes
with ``Last-Event-ID`` and loses nothing.

SSE framing follows the WHATWG spec: ``id:``, ``event:``, ``data:`` lines
and a blank line; a line starting with ``:`` is a comment (keep-alive).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from egw.core.model import Event, Task
from egw.core.records import LogChunk

MAX_BUFFER = 1 << 20  # bytes queued in one client's socket before it is dropped
WINDOW_BYTES = 64 << 10  # a tailed task's latest output kept in memory, for clients that join
KEEPALIVE = b": keepalive\n\n"


def encode(event: str | None, data: Any, id: str | int | None = None) -> bytes:
    """One SSE frame; ``data`` is sent as compact JSON on one line."""
    out = []
    if id is not None:
        out.append(f"id: {id}\n")
    if event is not None:
        out.append(f"event: {event}\n")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    out.extend(f"data: {line}\n" for line in text.split("\n"))
    out.append("\n")
    return "".join(out).encode()


def log_frame(chunk: LogChunk) -> bytes:
    return encode("log", {"stream": chunk.stream, "text": chunk.data.decode("utf-8", "replace")}, chunk.end)


def status_frame(task: Task) -> bytes:
    return encode("status", task.to_json())


def end_frame(task: Task) -> bytes:
    return encode(
        "end",
        {"status": str(task.status), "exit_code": task.exit_code, "reason": task.reason, "task": task.to_json()},
    )


def event_frame(event: Event) -> bytes:
    """``event: status`` for an event that moved the task, ``event: event`` for the rest
    (stale reports, progress of jobs and steps, upstream ids); ``id:`` is the sequence."""
    return encode("status" if event.applied else "event", event.to_json(), event.seq)


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def sse_headers() -> dict[str, str]:
    return {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        # nginx would otherwise buffer the stream
        "X-Accel-Buffering": "no",
    }


_LIVE: tuple[()] = ()  # the backlog of every live stream: nothing, and no list of its own


class SSEStream:
    """One client's open event stream (slots: thousands of these stay open at once)."""

    __slots__ = ("response", "transport", "live", "backlog", "done", "sent", "__weakref__")

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.response = response
        self.transport = request.transport
        self.live = False
        # what arrives during the replay; _LIVE once live (a list of its own costs 56 bytes)
        self.backlog: list[Any] | tuple[()] = []
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.sent = 0

    def hold(self, item: Any) -> None:
        """Keep what arrived during the replay (only a stream still replaying is given any)."""
        backlog = self.backlog
        assert isinstance(backlog, list), "a live stream holds nothing"
        backlog.append(item)

    async def write(self, data: bytes) -> None:
        """Write through aiohttp (replay, first bytes); may wait for the socket."""
        if data:
            await self.response.write(data)
            self.sent += len(data)

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
        self.sent += len(chunk)
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


class Channel:
    """Something the ticker flushes: pending items framed once per group of streams."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker
        self.dirty = False
        ticker.channels.add(self)

    def mark(self) -> None:
        if not self.dirty:
            self.dirty = True
            self.ticker.dirty.append(self)

    def remove(self, stream: SSEStream) -> None:  # pragma: no cover - overridden
        raise TypeError

    def flush(self) -> None:  # pragma: no cover - overridden
        raise TypeError

    def streams(self) -> Iterable[SSEStream]:  # pragma: no cover - overridden
        raise TypeError

    def all_streams(self) -> list[SSEStream]:
        """Live streams and those still replaying."""
        return [*self.streams(), *self.catching_up]  # type: ignore[attr-defined]


class LogChannel(Channel):
    """All live tailers of one task's log; a hub subscriber."""

    GROUPS = (None, "stdout", "stderr")

    def __init__(self, ticker: Ticker, task_id: str, on_empty: Callable[[LogChannel], None]) -> None:
        super().__init__(ticker)
        self.task_id = task_id
        self.groups: dict[str | None, set[SSEStream]] = {g: set() for g in self.GROUPS}
        self.catching_up: dict[SSEStream, str | None] = {}
        self.pending: list[tuple[str, Any]] = []
        self.task: Task | None = None
        self.logs_complete = False
        self.ended = False
        self._on_empty = on_empty
        # the window: the task's output from window_start to window_end, in memory;
        # window_start is None until it is loaded (chunks seen meanwhile are kept)
        self.window: deque[LogChunk] = deque()
        self.window_start: int | None = None
        self.window_end = 0
        self._window_bytes = 0
        self.loading: asyncio.Task[None] | None = None

    # the window ---------------------------------------------------------------------------------

    def covers(self, position: int) -> bool:
        """Whether a replay from ``position`` can come from memory."""
        return self.window_start is not None and self.window_start <= position

    def window_frames(self, position: int, group: str | None) -> list[bytes]:
        """Log frames of the window past ``position`` (``covers(position)`` must hold)."""
        return [
            log_frame(_tail(c, position))
            for c in self.window
            if c.end > position and group in (None, c.stream)
        ]

    def anchor(self, start: int, chunks: list[LogChunk]) -> None:
        """The window is the output from ``start``: ``chunks`` (read from the database)
        and the live chunks seen since the channel subscribed, which may overlap them."""
        merged: deque[LogChunk] = deque()
        end = start
        for chunk in [*chunks, *self.window]:
            if chunk.end <= end:
                continue
            if chunk.offset > end:  # a hole: the window would be wrong, so there is none
                self._reset_window()
                return
            merged.append(_tail(chunk, end))
            end = chunk.end
        self.window, self.window_start, self.window_end = merged, start, end
        self._window_bytes = sum(len(c.data) for c in merged)
        self._trim()

    def _remember(self, chunk: LogChunk) -> None:
        if self.window_start is None:
            if self.loading is not None and not self.loading.done():
                self.window.append(chunk)  # for anchor(), once the load is read
            return
        if chunk.end <= self.window_end:
            return
        if chunk.offset > self.window_end:
            self._reset_window()
            return
        chunk = _tail(chunk, self.window_end)
        self.window.append(chunk)
        self.window_end = chunk.end
        self._window_bytes += len(chunk.data)
        self._trim()

    def _trim(self) -> None:
        while self._window_bytes > WINDOW_BYTES and len(self.window) > 1:
            dropped = self.window.popleft()
            self._window_bytes -= len(dropped.data)
            self.window_start = self.window[0].offset

    def _reset_window(self) -> None:
        self.window.clear()
        self.window_start = None
        self.window_end = self._window_bytes = 0

    def streams(self) -> Iterable[SSEStream]:
        for group in self.groups.values():
            yield from group

    def add(self, stream: SSEStream, group: str | None) -> None:
        self.catching_up[stream] = group

    def go_live(self, stream: SSEStream, position: int, task: Task) -> list[bytes]:
        """Frames from the stream's backlog past ``position``; it is live from now on."""
        # first send what is pending to the streams already live: from here on, the
        # pending list holds only what this stream has not seen in its backlog
        self.flush()
        group = self.catching_up.pop(stream)
        frames: list[bytes] = []
        for kind, item in stream.backlog:
            if kind == "log":
                if item.end > position and group in (None, item.stream):
                    frames.append(log_frame(_tail(item, position)))
            elif kind == "status":
                frames.append(status_frame(item))
        stream.backlog = _LIVE  # a live stream gets no backlog: its list is let go
        stream.live = True
        self.groups[group].add(stream)
        return frames

    def remove(self, stream: SSEStream) -> None:
        self.catching_up.pop(stream, None)
        for group in self.groups.values():
            group.discard(stream)
        if not self.catching_up and not any(self.groups.values()):
            self._on_empty(self)

    # hub subscriber ---------------------------------------------------------------------------

    def on_log(self, chunk: LogChunk) -> None:
        for stream in self.catching_up:
            stream.hold(("log", chunk))
        self.pending.append(("log", chunk))
        self._remember(chunk)
        self.mark()

    def on_event(self, event: Event, task: Task | None) -> None:
        if task is None:
            return
        self.task = task
        if event.applied:
            for stream in self.catching_up:
                stream.hold(("status", task))
            self.pending.append(("status", task))
            self.mark()

    def on_logs_complete(self, task_id: str) -> None:
        self.logs_complete = True
        self.mark()

    # ticker -----------------------------------------------------------------------------------

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        end = b""
        if self.task is not None and self.task.status.terminal and self.logs_complete:
            end = end_frame(self.task)
        for group, streams in self.groups.items():
            if not streams:
                continue
            parts = []
            for kind, item in pending:
                if kind == "log":
                    if group in (None, item.stream):
                        parts.append(log_frame(item))
                else:
                    parts.append(status_frame(item))
            payload = b"".join(parts) + end
            if payload:
                chunk = _http_chunk(payload)
                for stream in list(streams):
                    if not stream.push(chunk):
                        streams.discard(stream)
            if end:
                for stream in streams:
                    stream.finish("end")
        if end:
            self.ended = True


class EventChannel(Channel):
    """Live clients of ``GET /v1/events`` and ``GET /v1/tasks/{id}/events``; a hub subscriber.

    Streams are grouped by their filter (provider, task id), so each distinct
    filter frames each event once per tick.
    """

    def __init__(self, ticker: Ticker) -> None:
        super().__init__(ticker)
        self.groups: dict[tuple[str | None, str | None], set[SSEStream]] = {}
        self.catching_up: dict[SSEStream, tuple[str | None, str | None]] = {}
        self.pending: list[Event] = []

    def streams(self) -> Iterable[SSEStream]:
        for group in self.groups.values():
            yield from group

    def add(self, stream: SSEStream, key: tuple[str | None, str | None]) -> None:
        self.catching_up[stream] = key

    def go_live(self, stream: SSEStream, after: int) -> list[bytes]:
        self.flush()  # as in LogChannel.go_live
        key = self.catching_up.pop(stream)
        frames = [event_frame(e) for e in stream.backlog if e.seq > after and _matches(key, e)]
        stream.backlog = _LIVE
        stream.live = True
        self.groups.setdefault(key, set()).add(stream)
        return frames

    def remove(self, stream: SSEStream) -> None:
        self.catching_up.pop(stream, None)
        for key, group in list(self.groups.items()):
            group.discard(stream)
            if not group:
                del self.groups[key]

    def on_event(self, event: Event, task: Task | None) -> None:
        if not self.groups and not self.catching_up:
            return
        for stream, key in self.catching_up.items():
            if _matches(key, event):
                stream.hold(event)
        self.pending.append(event)
        self.mark()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        frames = [(e, event_frame(e)) for e in pending]
        for key, streams in list(self.groups.items()):
            payload = b"".join(f for e, f in frames if _matches(key, e))
            if not payload:
                continue
            chunk = _http_chunk(payload)
            for stream in list(streams):
                if not stream.push(chunk):
                    streams.discard(stream)


def _matches(key: tuple[str | None, str | None], event: Event) -> bool:
    provider, task_id = key
    return (provider is None or event.provider == provider) and (
        task_id is None or event.task_id == task_id
    )


def _tail(chunk: LogChunk, position: int) -> LogChunk:
    """The part of a chunk after ``position`` (whole if it starts there or later)."""
    if position <= chunk.offset:
        return chunk
    cut = position - chunk.offset
    return LogChunk(chunk.task_id, position, chunk.stream, chunk.data[cut:])


class Ticker:
    """Flushes dirty channels every ``flush_s`` and sends keep-alives to every stream."""

    def __init__(self, *, flush_s: float, keepalive_s: float) -> None:
        self.flush_s = flush_s
        self.keepalive_s = keepalive_s
        self.dirty: list[Channel] = []
        #: every channel with clients (a task's log channel leaves when its last client does)
        self.channels: set[Channel] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="egw-sse-ticker")

    def stream_count(self) -> int:
        return sum(len(channel.all_streams()) for channel in self.channels)

    async def close(self) -> None:
        for channel in list(self.channels):
            for stream in channel.all_streams():
                stream.finish("shutdown")
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def flush_now(self) -> None:
        dirty, self.dirty = self.dirty, []
        for channel in dirty:
            channel.dirty = False
            channel.flush()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_keepalive = loop.time() + self.keepalive_s
        chunk = _http_chunk(KEEPALIVE)
        deadline = loop.time()
        while True:
            # ticks on fixed deadlines: a long flush shortens the next wait, not the rate
            deadline = max(deadline + self.flush_s, loop.time())
            await asyncio.sleep(deadline - loop.time())
            self.flush_now()
            if loop.time() >= next_keepalive:
                next_keepalive = loop.time() + self.keepalive_s
                for channel in list(self.channels):
                    for stream in list(channel.streams()):
                        stream.push(chunk)
