"""`LogWindow`: a tailed task's latest output (``WINDOW_BYTES``), kept in memory for the
clients that join its tail.

The window is loaded from the database once, when the task's log channel opens,
then extended by every live chunk. A client that resumes inside it replays from
memory, without a query and without waiting, so a reconnecting crowd costs one
read, not one per client (and no thousand suspended handlers at once, whose
memory the process would keep). Chunks committed while the load runs are kept
and merged with what the load read, so none is lost or doubled.
"""

from __future__ import annotations

import asyncio
from collections import deque

import structlog

from egw.core.access import ALL
from egw.core.records import LogChunk
from egw.service.reads import TaskReads, tail

log = structlog.get_logger("egw.service.logwindow")

WINDOW_BYTES = 64 << 10  # a tailed task's latest output kept in memory, for clients that join


class LogWindow:
    """The output of one task from `start` to `end`, in memory; `start` is None until loaded
    (or after a hole, when the window would be wrong)."""

    def __init__(self) -> None:
        self.chunks: deque[LogChunk] = deque()
        self.start: int | None = None
        self.end = 0
        self._bytes = 0
        #: the one load all clients joining at once wait for
        self.loading: asyncio.Future[None] | None = None

    def covers(self, position: int) -> bool:
        """Whether a replay from ``position`` can come from memory."""
        return self.start is not None and self.start <= position

    def after(self, position: int, group: str | None) -> list[LogChunk]:
        """The chunks past ``position`` of one stream (or both: ``group`` None), the first
        cut to start there; ``covers(position)`` must hold."""
        return [
            tail(c, position) for c in self.chunks if c.end > position and group in (None, c.stream)
        ]

    async def fill(self, task_id: str, reads: TaskReads) -> None:
        """Until the window is loaded: one read for all the clients joining at once. A load
        that fails is logged, and leaves the window empty (its clients replay from the
        database)."""
        if self.start is not None:
            return
        if self.loading is None or self.loading.done():
            self.loading = asyncio.create_task(self._load(task_id, reads))
            self.loading.add_done_callback(_loaded)
        # wait() neither raises the load's error (logged by _loaded) nor cancels the load
        # when this client leaves: the other clients still wait for it
        await asyncio.wait((self.loading,))

    async def _load(self, task_id: str, reads: TaskReads) -> None:
        task = await reads.task(task_id, scope=ALL)
        start = max(0, task.log_size - WINDOW_BYTES)
        chunks: list[LogChunk] = []
        position = start
        while got := await reads.log_chunks(task_id, position, scope=ALL):
            chunks += got
            position = got[-1].end
        self.anchor(start, chunks)

    def anchor(self, start: int, chunks: list[LogChunk]) -> None:
        """The window is the output from ``start``: ``chunks`` (read from the database)
        and the live chunks seen since the channel subscribed, which may overlap them."""
        merged: deque[LogChunk] = deque()
        end = start
        for chunk in [*chunks, *self.chunks]:
            if chunk.end <= end:
                continue
            if chunk.offset > end:  # a hole: the window would be wrong, so there is none
                self._reset()
                return
            merged.append(tail(chunk, end))
            end = chunk.end
        self.chunks, self.start, self.end = merged, start, end
        self._bytes = sum(len(c.data) for c in merged)
        self._trim()

    def remember(self, chunk: LogChunk) -> None:
        """Extend the window by a live chunk."""
        if self.start is None:
            if self.loading is not None and not self.loading.done():
                self.chunks.append(chunk)  # for anchor(), once the load is read
            return
        if chunk.end <= self.end:
            return
        if chunk.offset > self.end:
            self._reset()
            return
        chunk = tail(chunk, self.end)
        self.chunks.append(chunk)
        self.end = chunk.end
        self._bytes += len(chunk.data)
        self._trim()

    def _trim(self) -> None:
        while self._bytes > WINDOW_BYTES and len(self.chunks) > 1:
            dropped = self.chunks.popleft()
            self._bytes -= len(dropped.data)
            self.start = self.chunks[0].offset

    def _reset(self) -> None:
        self.chunks.clear()
        self.start = None
        self.end = self._bytes = 0


def _loaded(load: asyncio.Future[None]) -> None:
    if not load.cancelled() and load.exception() is not None:
        log.warning("log_window_load_failed", error=repr(load.exception()))
