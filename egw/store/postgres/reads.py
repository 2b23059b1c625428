"""PostgreSQL's read queries (`egw.store.backend.Reads`), on a pool beside the writer.

Each answers as its twin in ``egw/store/reads.py`` does (the store tests run on both);
only the SQL differs: ``$n`` parameters, arrays for lists, ``strpos`` and ``GREATEST``
for SQLite's ``instr`` and two-argument ``MAX``, a label read with ``->>`` of the text
column cast to ``jsonb`` (the stored text itself is never rewritten).
"""

from __future__ import annotations

from typing import Any

from egw.core.audit import EventFilter
from egw.core.model import TERMINAL, Event, Task, format_time, parse_time
from egw.core.records import GatewayEvent, LogChunk
from egw.store.rows import EVENT_COLUMNS, TASK_COLUMNS, event_from_row, loads, task_from_row

_TERMINAL = [str(s) for s in TERMINAL]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(isinstance(v, str) and "\x00" in v for v in value)
    return False


class _Where:
    """Conditions and their ``$n`` parameters, numbered as they are added."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.params: list[Any] = []

    def add(self, term: str, *values: Any) -> None:
        """``term`` with ``{}`` for each value's placeholder."""
        marks = []
        for value in values:
            self.params.append(value)
            marks.append(f"${len(self.params)}")
        self.terms.append(term.format(*marks))

    def mark(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def namespaces(self, namespaces: frozenset[str] | None) -> None:
        if namespaces is not None:
            self.add("namespace = ANY({}::text[])", sorted(namespaces))

    def sql(self) -> str:
        return " AND ".join(self.terms) if self.terms else "TRUE"


class PgReader:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def _all(self, sql: str, *params: Any) -> list[Any]:
        if any(_has_nul(p) for p in params):
            # PostgreSQL's text holds no NUL (SQLite's may): nothing stored can equal or
            # contain such a value, and every query here is a conjunction of such terms
            return []
        return list(await self._pool.fetch(sql, *params))

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def task(self, task_id: str) -> Task | None:
        rows = await self._all(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1", task_id)
        return task_from_row(rows[0]) if rows else None

    async def task_by_upstream(self, provider: str, upstream_id: str) -> Task | None:
        rows = await self._all(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE provider = $1 AND upstream_id = $2"
            " ORDER BY submit_seq DESC LIMIT 1",
            provider,
            upstream_id,
        )
        return task_from_row(rows[0]) if rows else None

    async def upstream_ids(self, provider: str) -> list[tuple[str, str]]:
        rows = await self._all(
            "SELECT upstream_id, id FROM tasks WHERE provider = $1 AND upstream_id IS NOT NULL"
            " ORDER BY submit_seq",
            provider,
        )
        return [(str(upstream_id), str(task_id)) for upstream_id, task_id in rows]

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
        w = _Where()
        w.namespaces(namespaces)
        if provider:
            w.add("provider = {}", provider)
        if status:
            w.add("status = ANY({}::text[])", status)
        for key, value in (labels or {}).items():
            w.add("(labels::jsonb ->> {}) = {}", key, value)
        if stuck is not None:
            w.add("stuck IS NOT NULL" if stuck else "stuck IS NULL")
        if name:
            w.add("strpos(name, {}) > 0", name)
        if before is not None:
            w.add("submit_seq < {}", before)
        limit_mark = w.mark(limit)
        rows = await self._all(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE {w.sql()}"
            f" ORDER BY submit_seq DESC LIMIT {limit_mark}",
            *w.params,
        )
        return [task_from_row(r) for r in rows]

    async def active(self, provider: str) -> list[Task]:
        rows = await self._all(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE provider = $1"
            " AND (status <> ALL($2::text[]) OR logs_complete = 0) ORDER BY submit_seq",
            provider,
            _TERMINAL,
        )
        return [task_from_row(r) for r in rows]

    async def unfinished(self) -> list[Task]:
        rows = await self._all(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE status <> ALL($1::text[]) ORDER BY submit_seq",
            _TERMINAL,
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
        w = _Where()
        w.add("seq > {}", after)
        w.namespaces(namespaces)
        if task_id:
            w.add("task_id = {}", task_id)
        if provider:
            w.add("provider = {}", provider)
        if status_only:
            w.add("applied = 1")
        limit_mark = w.mark(limit)
        rows = await self._all(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {w.sql()} ORDER BY seq LIMIT {limit_mark}",
            *w.params,
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
        w = _Where()
        w.add("seq > {} AND seq <= {}", after, upto)
        w.namespaces(namespaces)
        for column, value in (
            ("actor", where.actor),
            ("provider", where.provider),
            ("task_id", where.task_id),
        ):
            if value is not None:
                w.add(f"{column} = {{}}", value)
        if where.kinds:
            w.add("kind = ANY({}::text[])", list(where.kinds))
        if where.since is not None:
            w.add("at >= {}", format_time(where.since))
        if where.until is not None:
            w.add("at < {}", format_time(where.until))
        limit_mark = w.mark(limit)
        rows = await self._all(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {w.sql()} ORDER BY seq LIMIT {limit_mark}",
            *w.params,
        )
        return [event_from_row(r) for r in rows]

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

    async def cursor(self, key: str) -> str | None:
        rows = await self._all("SELECT value FROM cursors WHERE key = $1", key)
        return str(rows[0][0]) if rows else None

    async def pruned_seq(self) -> int:
        rows = await self._all("SELECT pruned_seq FROM pruned WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    async def max_seq(self) -> int:
        return int(await self._pool.fetchval("SELECT COALESCE(MAX(seq), 0) FROM events"))

    async def stuck_counts(self) -> dict[str, int]:
        rows = await self._all(
            "SELECT provider, COUNT(*) FROM tasks WHERE stuck IS NOT NULL GROUP BY provider"
        )
        return {str(provider): int(n) for provider, n in rows}

    async def counts_by_status(self, by: str = "provider") -> dict[str, dict[str, int]]:
        column = {"provider": "provider", "namespace": "namespace"}[by]
        rows = await self._all(
            f"SELECT {column}, status, COUNT(*) FROM tasks GROUP BY {column}, status"
        )
        out: dict[str, dict[str, int]] = {}
        for key, status, n in rows:
            out.setdefault(str(key), {})[str(status)] = int(n)
        return out
