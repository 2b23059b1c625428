"""`TaskReads`: the answers of the read routes (tasks, events, log chunks, counts), so that
the web layer asks the service and never the store.

A task is read from the writer's projection cache when it is there (the most
frequent request, a poll of one task, needs no query), else from the database;
a task found only in the database is then warmed into the cache in the
background, so the next poll of it needs no query either.

Every read of a task, its events or its output takes a `Scope` (`egw.core.access`),
keyword-only and without a default: a read route states whose view it answers, and a
task outside that scope is `NotFound` exactly as a task that never existed. The
gateway's own reads (fan-out, timeouts) pass `egw.core.access.ALL`.
"""

from __future__ import annotations

from collections.abc import Collection

from egw.core.access import Scope
from egw.core.audit import EventFilter, EventPage
from egw.core.model import Event, Task
from egw.core.records import LogChunk
from egw.errors import NotFound
from egw.store import Reads, Writer

#: sequence numbers the audit query looks at per page, at most
AUDIT_WINDOW = 100_000


class TaskReads:
    """Reads of tasks, events and logs: from the writer's cache first, else the read connection."""

    def __init__(self, reader: Reads, writer: Writer) -> None:
        self._reader = reader
        self._writer = writer

    async def task(self, task_id: str, *, scope: Scope) -> Task:
        """The task as last committed; `NotFound` if there is none in ``scope``."""
        task = self._writer.cached(task_id)
        if task is None:
            task = await self._reader.task(task_id)
            if task is None:
                raise _not_found(task_id)
            self._writer.warm(task_id)  # the next read of it needs no query
        if not scope.allows(task.namespace):
            raise _not_found(task_id)  # the same answer: ids cannot be probed
        return task

    async def tasks(
        self,
        *,
        provider: str | None = None,
        status: list[str] | None = None,
        labels: dict[str, str] | None = None,
        stuck: bool | None = None,
        name: str | None = None,
        before: int | None = None,
        limit: int = 50,
        scope: Scope,
    ) -> list[Task]:
        """One page of the tasks in ``scope``, newest first (``before``: a submit_seq cursor,
        whoever made it: the scope filters the page; ``name``: a part of the name); each task
        as the cache has it when it is there (fresher than the read connection's snapshot)."""
        found = await self._reader.tasks(
            provider=provider, status=status, labels=labels, stuck=stuck, name=name,
            before=before, limit=limit, namespaces=scope.namespaces,
        )  # fmt: skip
        cached = self._writer.cached
        return [cached(t.id) or t for t in found]

    async def events(
        self,
        *,
        after: int = 0,
        task_id: str | None = None,
        provider: str | None = None,
        limit: int = 500,
        scope: Scope,
    ) -> list[Event]:
        """Events after sequence ``after``, in order, of one task or provider or all, of the
        tasks in ``scope`` only (filtered in the query: a replay from any cursor, whoever
        made it, carries nothing else)."""
        return await self._reader.events(
            after=after,
            task_id=task_id,
            provider=provider,
            limit=limit,
            namespaces=scope.namespaces,
        )

    async def audit(
        self,
        *,
        after: int,
        where: EventFilter,
        limit: int,
        window: int = AUDIT_WINDOW,
        scope: Scope,
    ) -> EventPage:
        """One page of the audit query: matching events after ``after``, oldest first, of the
        tasks in ``scope`` only.

        At most ``window`` sequence numbers are looked at per page, so a filter that few
        events match costs a bounded read (the page may then be short or empty, with
        ``next_after`` to read on from). The page stops at the newest event that existed
        before the query ran: seqs are committed in order by the one writer, so every
        event up to it is visible, and ``last_seq`` never claims one that was not read."""
        newest = await self._reader.max_seq()
        upto = min(after + window, newest)
        found = await self._reader.audit(
            after=after, upto=upto, where=where, limit=limit + 1, namespaces=scope.namespaces
        )
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
        self, task_id: str, position: int, *, limit_bytes: int = 1 << 20, scope: Scope
    ) -> list[LogChunk]:
        """The next stored chunks of the task's output from byte ``position``, in order
        (empty at the end), at most ``limit_bytes`` of them in all (a read never loads a
        whole large log); the first is cut to start at ``position``. `NotFound` for a
        task outside ``scope``."""
        if scope.namespaces is not None:
            await self.task(task_id, scope=scope)
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

    async def stuck_counts(self) -> dict[str, int]:
        """Tasks flagged stuck, by provider (for the metrics)."""
        return await self._reader.stuck_counts()

    async def counts_by_namespace(self, known: Collection[str]) -> dict[str, dict[str, int]]:
        """Task counts by namespace, then status, every namespace not in ``known`` counted
        as ``other`` (a metric label stays bounded by the config)."""
        out: dict[str, dict[str, int]] = {}
        for ns, counts in (await self._reader.counts_by_status("namespace")).items():
            into = out.setdefault(ns if ns in known else "other", {})
            for status, n in counts.items():
                into[status] = into.get(status, 0) + n
        return out


def _not_found(task_id: str) -> NotFound:
    return NotFound(f"no task {task_id}", details={"task_id": task_id})


def tail(chunk: LogChunk, position: int) -> LogChunk:
    """The part of a chunk after ``position`` (whole if it starts there or later)."""
    if position <= chunk.offset:
        return chunk
    return LogChunk(chunk.task_id, position, chunk.stream, chunk.data[position - chunk.offset :])
