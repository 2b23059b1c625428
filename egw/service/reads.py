"""`TaskReads`: the answers of the read routes (tasks, events, log chunks, counts), so that
the web layer asks the service and never the store.

A task is read from the writer's projection cache when it is there (the most
frequent request, a poll of one task, needs no query), else from the database;
a task found only in the database is then warmed into the cache in the
background, so the next poll of it needs no query either.
"""

from __future__ import annotations

from egw.core.audit import EventFilter, EventPage
from egw.core.model import Event, Task
from egw.core.records import LogChunk
from egw.errors import NotFound
from egw.store import Reader, Writer

#: sequence numbers the audit query looks at per page, at most
AUDIT_WINDOW = 100_000


class TaskReads:
    """Reads of tasks, events and logs: from the writer's cache first, else the read connection."""

    def __init__(self, reader: Reader, writer: Writer) -> None:
        self._reader = reader
        self._writer = writer

    async def task(self, task_id: str) -> Task:
        """The task as last committed; `NotFound` if there is none."""
        task = self._writer.cached(task_id)
        if task is None:
            task = await self._reader.task(task_id)
            if task is None:
                raise NotFound(f"no task {task_id}", details={"task_id": task_id})
            self._writer.warm(task_id)  # the next read of it needs no query
        return task

    async def tasks(
        self,
        *,
        provider: str | None = None,
        status: list[str] | None = None,
        labels: dict[str, str] | None = None,
        name: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[Task]:
        """One page, newest first (``before``: a submit_seq cursor; ``name``: a part of the
        name); each task as the cache has it when it is there (fresher than the read
        connection's snapshot)."""
        found = await self._reader.tasks(
            provider=provider, status=status, labels=labels, name=name, before=before, limit=limit
        )
        cached = self._writer.cached
        return [cached(t.id) or t for t in found]

    async def events(
        self,
        *,
        after: int = 0,
        task_id: str | None = None,
        provider: str | None = None,
        limit: int = 500,
    ) -> list[Event]:
        """Events after sequence ``after``, in order, of one task or provider or all."""
        return await self._reader.events(
            after=after, task_id=task_id, provider=provider, limit=limit
        )

    async def audit(
        self, *, after: int, where: EventFilter, limit: int, window: int = AUDIT_WINDOW
    ) -> EventPage:
        """One page of the audit query: matching events after ``after``, oldest first.

        At most ``window`` sequence numbers are looked at per page, so a filter that few
        events match costs a bounded read (the page may then be short or empty, with
        ``next_after`` to read on from). The page stops at the newest event that existed
        before the query ran: seqs are committed in order by the one writer, so every
        event up to it is visible, and ``last_seq`` never claims one that was not read."""
        newest = await self._reader.max_seq()
        upto = min(after + window, newest)
        found = await self._reader.audit(after=after, upto=upto, where=where, limit=limit + 1)
        pruned = await self._reader.pruned_seq()
        if len(found) > limit:
            events = found[:limit]
            return EventPage(
                events=events,
                next_after=events[-1].seq,
                last_seq=events[-1].seq,
                pruned_seq=pruned,
            )
        return EventPage(
            events=found,
            next_after=upto if upto < newest else None,
            last_seq=max(after, upto),
            pruned_seq=pruned,
        )

    async def log_chunks(
        self, task_id: str, position: int, *, limit_bytes: int = 1 << 20
    ) -> list[LogChunk]:
        """The next stored chunks of the task's output from byte ``position``, in order
        (empty at the end), at most ``limit_bytes`` of them in all (a read never loads a
        whole large log); the first is cut to start at ``position``."""
        found = await self._reader.logs(task_id, offset=position, limit_bytes=limit_bytes)
        chunks = [c for c in found if c.end > position]
        if chunks:
            chunks[0] = tail(chunks[0], position)
        return chunks

    async def max_seq(self) -> int:
        """The sequence of the newest event (0 if there is none)."""
        return await self._reader.max_seq()

    async def pruned_seq(self) -> int:
        """The newest sequence retention has removed (0 if none)."""
        return await self._reader.pruned_seq()

    async def counts_by_status(self) -> dict[str, dict[str, int]]:
        """Task counts by provider, then status (for the metrics)."""
        return await self._reader.counts_by_status()


def tail(chunk: LogChunk, position: int) -> LogChunk:
    """The part of a chunk after ``position`` (whole if it starts there or later)."""
    if position <= chunk.offset:
        return chunk
    return LogChunk(chunk.task_id, position, chunk.stream, chunk.data[position - chunk.offset :])
