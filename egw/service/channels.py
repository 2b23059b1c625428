"""The fan-out channels: each task's log tailers (`LogChannel`, opened through `LogChannels`)
and the event-log clients (`EventChannel`), hub subscribers that the `Ticker` flushes.

A channel holds its streams by group of identical clients and frames what is
pending once per group and tick; a stream still replaying gets a backlog
instead, drained when it goes live (see the theory of operation in
`egw.service.ticker`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from egw.core.access import Scope
from egw.core.model import Event, Task
from egw.core.records import LogChunk
from egw.service.fanout import Hub
from egw.service.logwindow import LogWindow
from egw.service.reads import TaskReads, tail
from egw.service.ticker import LIVE, Stream, Ticker

#: an event client's filter: provider, task id (None: any), and the namespaces it may read
EventFilter = tuple[str | None, str | None, Scope]
#: what a status or an event in a replaying client's backlog counts for, in bytes (about its
#: frame's size), against the client's budget
HELD_ITEM = 1024


class LogChannel:
    """All live tailers of one task's log; a hub subscriber."""

    GROUPS = (None, "stdout", "stderr")

    def __init__(
        self, ticker: Ticker, task_id: str, reads: TaskReads, on_empty: Callable[[LogChannel], None]
    ) -> None:
        self.ticker = ticker
        self.framing = ticker.framing
        self.dirty = False
        self.task_id = task_id
        self.groups: dict[str | None, set[Stream]] = {g: set() for g in self.GROUPS}
        self.catching_up: dict[Stream, str | None] = {}
        self.pending: list[tuple[str, Any]] = []
        self.task: Task | None = None
        self.logs_complete = False
        self.ended = False
        self.window = LogWindow()
        #: where the output heard from the hub ends (0: none heard yet)
        self.heard = 0
        #: streams whose replay read past `heard` (on PostgreSQL, output another replica
        #: committed that the feed has not brought yet): their position and group, until
        #: the chunks arriving start past it (`_flush_ahead`); each is sent once
        self.ahead: dict[Stream, tuple[int, str | None]] = {}
        self._reads = reads
        self._on_empty = on_empty
        ticker.channels.add(self)

    # a client's replay --------------------------------------------------------------------------

    def add(self, stream: Stream, group: str | None) -> None:
        """A client joins: it replays while what arrives piles up in its backlog."""
        self.catching_up[stream] = group

    async def fill_window(self) -> None:
        """Until the window is loaded (one read for all the clients joining at once)."""
        await self.window.fill(self.task_id, self._reads)

    def window_frames(self, position: int, group: str | None) -> list[bytes]:
        """Log frames of the window past ``position`` (``window.covers(position)`` must hold)."""
        return [self.framing.log(c) for c in self.window.after(position, group)]

    def go_live(self, stream: Stream, position: int, task: Task, frames: list[bytes]) -> None:
        """The replay is done up to byte ``position`` and ``task``: write ``frames`` (what the
        replay has not written yet), the task's status and the stream's backlog past
        ``position`` in one write; the stream is live from now on (or ends, if the task has)."""
        # first send what is pending to the streams already live: from here on, the
        # pending list holds only what this stream has not seen in its backlog
        self.flush()
        framing = self.framing
        group = self.catching_up.pop(stream)
        frames.append(framing.status(task))
        for kind, item in stream.backlog:
            if kind == "log":
                if item.end > position and group in (None, item.stream):
                    frames.append(framing.log(tail(item, position)))
            elif kind == "status":
                frames.append(framing.status(item))
        stream.backlog = LIVE  # a live stream gets no backlog: its list is let go
        self.groups[group].add(stream)
        if position > self.heard:
            self.ahead[stream] = (position, group)
        if self.task is None or self.task.index < task.index:
            self.task = task
        self.logs_complete = self.logs_complete or task.logs_complete
        current = self.task
        if current.status.terminal and self.logs_complete:
            frames.append(framing.end(current))
        payload = b"".join(frames)
        stream.push(payload, framing.write(payload))
        if current.status.terminal and self.logs_complete:
            stream.finish("end")

    def streams(self) -> Iterable[Stream]:
        for group in self.groups.values():
            yield from group

    def all_streams(self) -> list[Stream]:
        return [*self.streams(), *self.catching_up]

    def remove(self, stream: Stream) -> None:
        self.catching_up.pop(stream, None)
        self.ahead.pop(stream, None)
        for group in self.groups.values():
            group.discard(stream)
        if not self.catching_up and not any(self.groups.values()):
            self._on_empty(self)

    # hub subscriber ---------------------------------------------------------------------------

    def on_log(self, chunk: LogChunk) -> None:
        self.heard = max(self.heard, chunk.end)
        for stream in self.catching_up:
            stream.hold(("log", chunk), len(chunk.data))
        self.pending.append(("log", chunk))
        self.window.remember(chunk)
        self.ticker.mark(self)

    def on_event(self, event: Event, task: Task | None) -> None:
        if task is None:
            return
        self.task = task
        if event.applied:
            for stream in self.catching_up:
                stream.hold(("status", task), HELD_ITEM)
            self.pending.append(("status", task))
            self.ticker.mark(self)

    def on_logs_complete(self, task_id: str) -> None:
        self.logs_complete = True
        self.ticker.mark(self)

    # ticker -----------------------------------------------------------------------------------

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        framing = self.framing
        end = b""
        if self.task is not None and self.task.status.terminal and self.logs_complete:
            end = framing.end(self.task)
        alone = self._flush_ahead(pending, end) if self.ahead else set()
        for group, streams in self.groups.items():
            if not streams:
                continue
            parts = []
            for kind, item in pending:
                if kind == "log":
                    if group in (None, item.stream):
                        parts.append(framing.log(item))
                else:
                    parts.append(framing.status(item))
            payload = b"".join(parts) + end
            if payload:
                chunk = framing.write(payload)
                for stream in list(streams):
                    if stream not in alone and not stream.push(payload, chunk):
                        streams.discard(stream)
            if end:
                for stream in streams:
                    if stream not in alone:
                        stream.finish("end")
        if end:
            self.ended = True

    def _flush_ahead(self, pending: list[tuple[str, Any]], end: bytes) -> set[Stream]:
        """Streams ahead of the pending output get it cut at their position (sent here;
        returned); a stream the output has caught up with rejoins its group's frames."""
        logs = [item for kind, item in pending if kind == "log"]
        alone: set[Stream] = set()
        if not logs and not end:
            return alone
        framing = self.framing
        for stream, (position, group) in list(self.ahead.items()):
            if not logs or logs[0].offset >= position:
                del self.ahead[stream]  # in step with the hub from here on
                continue
            alone.add(stream)
            self.ahead[stream] = (max(position, logs[-1].end), group)
            parts = []
            for kind, item in pending:
                if kind != "log":
                    parts.append(framing.status(item))
                elif item.end > position and group in (None, item.stream):
                    parts.append(framing.log(tail(item, position)))
            payload = b"".join(parts) + end
            if payload and not stream.push(payload, framing.write(payload)):
                self.groups[group].discard(stream)
            elif end:
                stream.finish("end")
        return alone


class LogChannels:
    """The open log channels, one per tailed task; a channel closes with its last client."""

    def __init__(self, ticker: Ticker, hub: Hub, reads: TaskReads) -> None:
        self._ticker = ticker
        self._hub = hub
        self._reads = reads
        self._open: dict[str, LogChannel] = {}

    def join(self, task_id: str) -> LogChannel:
        """The task's open channel, or a new one subscribed to the hub (after an ended one)."""
        channel = self._open.get(task_id)
        if channel is None or channel.ended:
            channel = LogChannel(self._ticker, task_id, self._reads, self._close)
            self._open[task_id] = channel
            self._hub.subscribe(task_id, channel)
        return channel

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._open

    def _close(self, channel: LogChannel) -> None:
        if self._open.get(channel.task_id) is channel:
            del self._open[channel.task_id]
        self._hub.unsubscribe(channel.task_id, channel)
        self._ticker.channels.discard(channel)


class EventChannel:
    """Live clients of ``GET /v1/events`` and ``GET /v1/tasks/{id}/events``; a hub subscriber.

    Streams are grouped by their filter (`EventFilter`: provider, task id, the namespaces
    the client may read), so each distinct filter frames each event once per tick.
    """

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker
        self.framing = ticker.framing
        self.dirty = False
        self.groups: dict[EventFilter, set[Stream]] = {}
        self.catching_up: dict[Stream, EventFilter] = {}
        self.pending: list[Event] = []
        #: the last event heard from the hub
        self.heard = 0
        #: streams whose replay read past `heard` (as `LogChannel.ahead`): their last seq
        self.ahead: dict[Stream, tuple[int, EventFilter]] = {}
        ticker.channels.add(self)

    def streams(self) -> Iterable[Stream]:
        for group in self.groups.values():
            yield from group

    def all_streams(self) -> list[Stream]:
        return [*self.streams(), *self.catching_up]

    def add(self, stream: Stream, key: EventFilter) -> None:
        """A client with filter ``key`` joins and replays."""
        self.catching_up[stream] = key

    def go_live(self, stream: Stream, after: int) -> None:
        """The replay is done up to sequence ``after``: write the stream's backlog past it;
        the stream is live from now on."""
        self.flush()  # as in LogChannel.go_live
        key = self.catching_up.pop(stream)
        event = self.framing.event
        frames = [event(e) for e in stream.backlog if e.seq > after and matches(key, e)]
        stream.backlog = LIVE
        self.groups.setdefault(key, set()).add(stream)
        if after > self.heard:
            self.ahead[stream] = (after, key)
        if frames:
            payload = b"".join(frames)
            stream.push(payload, self.framing.write(payload))

    def remove(self, stream: Stream) -> None:
        self.catching_up.pop(stream, None)
        self.ahead.pop(stream, None)
        for key, group in list(self.groups.items()):
            group.discard(stream)
            if not group:
                del self.groups[key]

    def on_event(self, event: Event, task: Task | None) -> None:
        self.heard = max(self.heard, event.seq)
        if not self.groups and not self.catching_up:
            return
        for stream, key in self.catching_up.items():
            if matches(key, event):
                stream.hold(event, HELD_ITEM)
        self.pending.append(event)
        self.ticker.mark(self)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        frames = [(e, self.framing.event(e)) for e in pending]
        alone = self._flush_ahead(frames) if self.ahead and pending else set()
        for key, streams in list(self.groups.items()):
            payload = b"".join(f for e, f in frames if matches(key, e))
            if not payload:
                continue
            chunk = self.framing.write(payload)
            for stream in list(streams):
                if stream not in alone and not stream.push(payload, chunk):
                    streams.discard(stream)

    def _flush_ahead(self, frames: list[tuple[Event, bytes]]) -> set[Stream]:
        """As `LogChannel._flush_ahead`: events a stream's replay sent already are left out."""
        alone: set[Stream] = set()
        for stream, (after, key) in list(self.ahead.items()):
            if frames[0][0].seq > after:
                del self.ahead[stream]
                continue
            alone.add(stream)
            self.ahead[stream] = (max(after, frames[-1][0].seq), key)
            payload = b"".join(f for e, f in frames if e.seq > after and matches(key, e))
            if payload and not stream.push(payload, self.framing.write(payload)):
                self.groups.get(key, set()).discard(stream)
        return alone


def matches(key: EventFilter, event: Event) -> bool:
    """Whether an event passes a client's filter (provider, task id; None: any; and always
    the namespaces it may read)."""
    provider, task_id, scope = key
    return (
        scope.allows(event.namespace)
        and (provider is None or event.provider == provider)
        and (task_id is None or event.task_id == task_id)
    )
