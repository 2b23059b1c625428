"""SQLite's read queries, on their own connection (WAL lets them run beside the writer)."""

from __future__ import annotations

import json
from typing import Any

import aiosqlite

from egw.core.audit import EventFilter
from egw.core.model import TERMINAL, Event, Task, format_time, parse_time
from egw.core.records import GatewayEvent, LogChunk
from egw.store.rows import EVENT_COLUMNS, TASK_COLUMNS, event_from_row, task_from_row


class Reader:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def _all(
        self, sql: str, params: list[Any] | tuple[Any, ...] | dict[str, Any] = ()
    ) -> list[Any]:
        async with self._conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def task(self, task_id: str) -> Task | None:
        rows = await self._all(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        return task_from_row(rows[0]) if rows else None

    async def task_by_upstream(self, provider: str, upstream_id: str) -> Task | None:
        rows = await self._all(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE provider = ? AND upstream_id = ?"
            " ORDER BY submit_seq DESC LIMIT 1",
            (provider, upstream_id),
        )
        return task_from_row(rows[0]) if rows else None

    async def upstream_ids(self, provider: str) -> list[tuple[str, str]]:
        """(upstream id, task id) of ``provider``'s tasks that have one, oldest submit first."""
        rows = await self._all(
            "SELECT upstream_id, id FROM tasks WHERE provider = ? AND upstream_id IS NOT NULL"
            " ORDER BY submit_seq",
            (provider,),
        )
        return [(str(upstream_id), str(task_id)) for upstream_id, task_id in rows]

    async def ping(self) -> None:
        await self._all("SELECT 1")

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
        namespaces: frozenset[str] | None = None,
    ) -> list[Task]:
        """Newest first by submission order; ``before`` is a submit_seq cursor; ``name``
        matches the names that contain it (case-sensitive); ``namespaces``: only tasks of
        these (None: of any)."""
        where: list[str] = []
        params: list[Any] = []
        _in_namespaces(namespaces, where, params)
        if provider:
            where.append("provider = ?")
            params.append(provider)
        if status:
            where.append(f"status IN ({','.join('?' * len(status))})")
            params.extend(status)
        for key, value in (labels or {}).items():
            # json_each, not a JSON path built from the key: a key may hold any character
            # (a quote, a NUL) that a path would have to escape
            where.append("EXISTS (SELECT 1 FROM json_each(labels) WHERE key = ? AND value = ?)")
            params.extend([key, value])
        if stuck is not None:
            where.append("stuck IS NOT NULL" if stuck else "stuck IS NULL")
        if name:
            where.append("instr(name, ?) > 0")
            params.append(name)
        if before is not None:
            where.append("submit_seq < ?")
            params.append(before)
        sql = f"SELECT {TASK_COLUMNS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY submit_seq DESC LIMIT ?"
        params.append(limit)
        return [task_from_row(r) for r in await self._all(sql, params)]

    async def active(self, provider: str) -> list[Task]:
        terminal = [str(s) for s in TERMINAL]
        marks = ",".join("?" * len(terminal))
        rows = await self._all(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE provider = ?"
            f" AND (status NOT IN ({marks}) OR logs_complete = 0) ORDER BY submit_seq",
            [provider, *terminal],
        )
        return [task_from_row(r) for r in rows]

    async def unfinished(self) -> list[Task]:
        terminal = [str(s) for s in TERMINAL]
        marks = ",".join("?" * len(terminal))
        rows = await self._all(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE status NOT IN ({marks}) ORDER BY submit_seq",
            terminal,
        )
        return [task_from_row(r) for r in rows]

    async def events(
        self,
        *,
        after: int = 0,
        task_id: str | None = None,
        provider: str | None = None,
        limit: int = 500,
        status_only: bool = False,
        namespaces: frozenset[str] | None = None,
    ) -> list[Event]:
        where = ["seq > ?"]
        params: list[Any] = [after]
        _in_namespaces(namespaces, where, params)
        if task_id:
            where.append("task_id = ?")
            params.append(task_id)
        if provider:
            where.append("provider = ?")
            params.append(provider)
        if status_only:
            where.append("applied = 1")
        params.append(limit)
        rows = await self._all(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            params,
        )
        return [event_from_row(r) for r in rows]

    async def audit(
        self,
        *,
        after: int,
        upto: int,
        where: EventFilter,
        limit: int,
        namespaces: frozenset[str] | None = None,
    ) -> list[Event]:
        """Events with ``after < seq <= upto`` that match ``where``, oldest first, at most
        ``limit``, of ``namespaces`` only (None: any). The seq range bounds the rows looked
        at; an actor or kind filter walks its index (``0002_audit.sql``) and a task's its own."""
        sql = ["seq > ? AND seq <= ?"]
        params: list[Any] = [after, upto]
        _in_namespaces(namespaces, sql, params)
        for column, value in (
            ("actor", where.actor),
            ("provider", where.provider),
            ("task_id", where.task_id),
        ):
            if value is not None:
                sql.append(f"{column} = ?")
                params.append(value)
        if where.kinds:
            sql.append(f"kind IN ({','.join('?' * len(where.kinds))})")
            params.extend(where.kinds)
        # ``at`` is stored as fixed-width RFC 3339 in UTC: text order is time order
        if where.since is not None:
            sql.append("at >= ?")
            params.append(format_time(where.since))
        if where.until is not None:
            sql.append("at < ?")
            params.append(format_time(where.until))
        params.append(limit)
        rows = await self._all(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(sql)} ORDER BY seq LIMIT ?",
            params,
        )
        return [event_from_row(r) for r in rows]

    async def logs(
        self,
        task_id: str,
        *,
        offset: int = 0,
        limit_bytes: int = 1 << 20,
    ) -> list[LogChunk]:
        """The task's stored output from byte ``offset`` on, at most ``limit_bytes`` of it, in
        chunks in order, the first and the last cut at the bounds.

        Stored output is a run of chunks (each one's ``pos`` is the byte where it starts)
        with at most one hole: the bytes a task wrote past its ``max_log_bytes`` between
        its head and its tail (`egw.store.ops.AppendLog`). The read starts at the chunk
        holding ``offset``, or, when ``offset`` falls in the hole, at the first chunk after
        it; it takes the chunks starting before that start plus ``limit_bytes``, and
        ``substr`` cuts the two at the ends. The bound is applied in SQL: no more than
        ``limit_bytes`` (and 4,096 rows) ever leave SQLite, whatever the size of the log
        or of one chunk; cheaper than a running sum (a window function copies every row
        into a temporary table) or a loop of queries.
        """
        rows = await self._all(
            "WITH below(p) AS (SELECT MAX(pos) FROM log_chunks"
            "  WHERE task_id = :task AND pos <= :offset),"
            " first(start) AS (SELECT CASE"
            "  WHEN (SELECT pos + length(data) FROM log_chunks"
            "        WHERE task_id = :task AND pos = (SELECT p FROM below)) > :offset"
            "  THEN :offset"
            "  ELSE (SELECT MIN(pos) FROM log_chunks WHERE task_id = :task AND pos > :offset)"
            "  END)"
            " SELECT MAX(pos, start), stream,"
            " substr(data, MAX(start - pos, 0) + 1, start + :limit - MAX(pos, start))"
            " FROM log_chunks, first WHERE task_id = :task AND start IS NOT NULL"
            " AND pos >= COALESCE((SELECT p FROM below WHERE start = :offset), start)"
            " AND pos < start + :limit ORDER BY pos LIMIT 4096",
            {"task": task_id, "offset": offset, "limit": limit_bytes},
        )
        return [
            LogChunk(task_id, int(at), str(stream), bytes(data))
            for at, stream, data in rows
            if data
        ]

    async def gateway_events(self, *, after: int, limit: int) -> list[GatewayEvent]:
        """The gateway's own events after ``after`` (a ``seq``), oldest first."""
        rows = await self._all(
            "SELECT seq, kind, provider, target, at, data FROM gateway_events"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        out = []
        for seq, kind, provider, target, at, data in rows:
            when = parse_time(str(at))
            assert when is not None  # the column is NOT NULL
            out.append(GatewayEvent(int(seq), kind, provider, target, when, json.loads(data)))
        return out

    async def cursor(self, key: str) -> str | None:
        rows = await self._all("SELECT value FROM cursors WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def pruned_seq(self) -> int:
        rows = await self._all("SELECT pruned_seq FROM pruned WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    async def max_seq(self) -> int:
        rows = await self._all("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(rows[0][0])

    async def stuck_counts(self) -> dict[str, int]:
        rows = await self._all(
            "SELECT provider, COUNT(*) FROM tasks WHERE stuck IS NOT NULL GROUP BY provider"
        )
        return {str(provider): int(n) for provider, n in rows}

    async def counts_by_status(self, by: str = "provider") -> dict[str, dict[str, int]]:
        """Task counts by ``by`` (``provider`` or ``namespace``), then status."""
        column = {"provider": "provider", "namespace": "namespace"}[by]
        rows = await self._all(
            f"SELECT {column}, status, COUNT(*) FROM tasks GROUP BY {column}, status"
        )
        out: dict[str, dict[str, int]] = {}
        for provider, status, n in rows:
            out.setdefault(str(provider), {})[str(status)] = int(n)
        return out


def _in_namespaces(namespaces: frozenset[str] | None, where: list[str], params: list[Any]) -> None:
    """Add ``namespace IN (...)`` to a query (nothing for None; an empty set matches nothing)."""
    if namespaces is None:
        return
    where.append(f"namespace IN ({','.join('?' * len(namespaces))})" if namespaces else "0")
    params.extend(sorted(namespaces))
