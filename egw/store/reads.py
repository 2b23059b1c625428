"""SQLite's read queries, on their own connection (WAL lets them run beside the writer);
those both dialects spell alike are built in ``queries.py``; here, SQLite's own."""

from __future__ import annotations

import json
from typing import Any

import aiosqlite

from egw.core.model import parse_time
from egw.core.records import GatewayEvent, LogChunk
from egw.store.queries import Dialect, QueryReads

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
