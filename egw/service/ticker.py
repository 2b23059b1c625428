"""The fan-out engine's clock: the `Ticker` flushes dirty channels each tick, and the
protocols of what it drives (`Channel`, `Stream`, `Framing`).

Theory of operation
-------------------
A task's output may be tailed by thousands of clients at once. A coroutine
and a queue per client (the usual pattern) collapses at about a thousand
subscribers on one core. Instead, live output is *batched per tick*:

* The hub hands each committed log chunk and status event to one `LogChannel`
  per task (and one `EventChannel` for ``/v1/events``); the channel only
  appends it to a pending list (see `egw.service.channels`).
* Every ``flush_s`` the `Ticker` asks each dirty channel to frame its pending
  items once per *group* of identical clients (for logs: all streams, stdout
  only, stderr only) and writes that one pre-framed write straight to each
  client's `Stream`: no coroutine, no copy per client.
* A new client first replays (``Last-Event-ID`` or ``offset``) while live
  items pile up in its own backlog; once the replay is done it drains the
  backlog (skipping what the replay already covered, by offset or sequence)
  and joins its group. Both steps run on the one event loop, so nothing falls
  between them and nothing is sent twice.
* A log channel keeps its task's latest output in a `LogWindow`, so that a
  crowd joining one task costs one read (see `egw.service.logwindow`).

The bytes are the web layer's business: it hands the ticker a `Framing` (SSE
frames, and the same as HTTP/1.1 chunks, `egw.web.sse`) and each client as a
`Stream`, which writes the chunk or the plain frames as its response needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from egw.background import cancel_and_wait
from egw.core.model import Event, Task
from egw.core.records import LogChunk

#: the backlog of every live stream: nothing, and no list of its own (a list costs 56 bytes,
#: and thousands of streams are open at once)
LIVE: tuple[()] = ()


class Stream(Protocol):
    """One client's open stream, as the engine sees it."""

    #: what arrives during the client's replay; `LIVE` once it is live
    backlog: list[Any] | tuple[()]

    def hold(self, item: Any, size: int) -> None:
        """Keep an item that arrived during the replay (``size``: about its bytes, counted
        against the client's budget)."""

    def push(self, frames: bytes, chunk: bytes) -> bool:
        """Write ``frames`` now, or ``chunk``, the same framed for the stream's transfer
        encoding (`Framing.write`, once per group); False (and finish) if the client is gone
        or too slow."""

    def finish(self, why: str) -> None:
        """End the stream (its response then ends, and it leaves its channel)."""


class Framing(Protocol):
    """How items become bytes on a stream (`egw.web.sse.SSEFraming`)."""

    def log(self, chunk: LogChunk) -> bytes: ...

    def status(self, task: Task) -> bytes: ...

    def end(self, task: Task) -> bytes: ...

    def event(self, event: Event) -> bytes: ...

    def keepalive(self) -> bytes: ...

    def write(self, frames: bytes) -> bytes:
        """Frames as one pre-framed write on a live stream (an HTTP/1.1 chunk)."""


class Channel(Protocol):
    """Something the ticker flushes: pending items framed once per group of streams."""

    #: marked by `Ticker.mark`: it has pending items and is on the ticker's dirty list
    dirty: bool

    def flush(self) -> None:
        """Frame the pending items once per group and push them to its live streams."""

    def streams(self) -> Iterable[Stream]:
        """The live streams."""

    def all_streams(self) -> list[Stream]:
        """Live streams and those still replaying."""

    def remove(self, stream: Stream) -> None:
        """The stream ended (or its replay failed): forget it."""


class Ticker:
    """Flushes dirty channels every ``flush_s`` and sends keep-alives to every stream."""

    def __init__(self, framing: Framing, *, flush_s: float, keepalive_s: float) -> None:
        self.framing = framing
        self.flush_s = flush_s
        self.keepalive_s = keepalive_s
        self.dirty: list[Channel] = []
        #: every channel with clients (a task's log channel leaves when its last client does)
        self.channels: set[Channel] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="egw-sse-ticker")

    def mark(self, channel: Channel) -> None:
        """Flush ``channel`` at the next tick."""
        if not channel.dirty:
            channel.dirty = True
            self.dirty.append(channel)

    def stream_count(self) -> int:
        return sum(len(channel.all_streams()) for channel in self.channels)

    async def close(self) -> None:
        for channel in list(self.channels):
            for stream in channel.all_streams():
                stream.finish("shutdown")
        await cancel_and_wait(self._task)

    def flush_now(self) -> None:
        dirty, self.dirty = self.dirty, []
        for channel in dirty:
            channel.dirty = False
            channel.flush()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_keepalive = loop.time() + self.keepalive_s
        keepalive = self.framing.keepalive()
        keepalive_chunk = self.framing.write(keepalive)
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
                        stream.push(keepalive, keepalive_chunk)
