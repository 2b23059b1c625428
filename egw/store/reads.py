"""SQLite's read queries, on their own connection (WAL lets them run beside the writer);
the filtered ones are built in ``queries.py``, with PostgreSQL's."""

from __future__ import annotations

import json
from typing import Any

import aiosqlite

from egw.core.model import Task, parse_time
from egw.core.records import GatewayEvent, LogChunk
from egw.store.queries import Dialect, QueryReads
from egw.store.rows import TASK_COLUMNS, task_from_row

SQLITE = Dialect(
    numbered=False,
    # json_each, not a JSON path built from the key: a key may hold any character (a
    # quote, a NUL) that a path would have to escape
    label="EXISTS (SELECT 1 FROM json_each(labels) WHERE key = {} AND value = {})",
    contains="instr(name, {}) > 0",
)


class Reader(QueryReads):
    dialect = SQLITE

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def _rows(self, sql: str, params: list[Any]) -> list[Any]:
        return await self._all(sql, params)

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
