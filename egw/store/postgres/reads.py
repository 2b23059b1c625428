"""PostgreSQL's read queries (`egw.store.backend.Reads`), on a pool beside the writer.

Each answers as its twin in ``egw/store/reads.py`` does (the store tests run on both);
all but the log and gateway-event reads are built once in ``egw/store/queries.py``
from `POSTGRESQL`. Only the SQL differs: ``$n`` parameters, arrays for lists, ``strpos``
and ``GREATEST`` for SQLite's ``instr`` and two-argument ``MAX``, a label read with ``->>``
of the text column cast to ``jsonb`` (the stored text itself is never rewritten).
"""

from __future__ import annotations

from typing import Any

from egw.core.model import parse_time
from egw.core.records import GatewayEvent, LogChunk
from egw.store.queries import Dialect, QueryReads
from egw.store.rows import loads


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(isinstance(v, str) and "\x00" in v for v in value)
    return False


POSTGRESQL = Dialect(
    numbered=True,
    label="(labels::jsonb ->> {}) = {}",
    contains="strpos(name, {}) > 0",
)


class PgReader(QueryReads):
    dialect = POSTGRESQL

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def _rows(self, sql: str, params: list[Any]) -> list[Any]:
        return await self._all(sql, *params)

    async def _all(self, sql: str, *params: Any) -> list[Any]:
        if any(_has_nul(p) for p in params):
            # PostgreSQL's text holds no NUL (SQLite's may): nothing stored can equal or
            # contain such a value, and every query here is a conjunction of such terms
            return []
        return list(await self._pool.fetch(sql, *params))

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def logs(
        self, task_id: str, *, offset: int = 0, limit_bytes: int = 1 << 20
    ) -> list[LogChunk]:
        """As `egw.store.reads.Reader.logs` (its docstring explains the query), with
        ``GREATEST`` for SQLite's scalar ``MAX`` and ``substr`` of ``bytea``."""
        rows = await self._all(
            "WITH below(p) AS (SELECT MAX(pos) FROM log_chunks"
            "  WHERE task_id = $1 AND pos <= $2),"
            " first(start) AS (SELECT CASE"
            "  WHEN (SELECT pos + length(data) FROM log_chunks"
            "        WHERE task_id = $1 AND pos = (SELECT p FROM below)) > $2"
            "  THEN $2::bigint"
            "  ELSE (SELECT MIN(pos) FROM log_chunks WHERE task_id = $1 AND pos > $2)"
            "  END)"
            " SELECT GREATEST(pos, start), stream,"
            " substr(data, (GREATEST(start - pos, 0) + 1)::int,"
            "  LEAST(start + $3 - GREATEST(pos, start), 2147483647)::int)"
            " FROM log_chunks, first WHERE task_id = $1 AND start IS NOT NULL"
            " AND pos >= COALESCE((SELECT p FROM below WHERE start = $2), start)"
            " AND pos < start + $3 ORDER BY pos LIMIT 4096",
            task_id,
            offset,
            limit_bytes,
        )
        return [
            LogChunk(task_id, int(at), str(stream), bytes(data))
            for at, stream, data in rows
            if data
        ]

    async def gateway_events(self, *, after: int, limit: int) -> list[GatewayEvent]:
        rows = await self._all(
            "SELECT seq, kind, provider, target, at, data FROM gateway_events"
            " WHERE seq > $1 ORDER BY seq LIMIT $2",
            after,
            limit,
        )
        out = []
        for seq, kind, provider, target, at, data in rows:
            when = parse_time(str(at))
            assert when is not None  # the column is NOT NULL
            out.append(GatewayEvent(int(seq), kind, provider, target, when, loads(data)))
        return out
