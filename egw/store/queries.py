"""The read queries, built once for both dialects.

Listing tasks, events and the audit trail composes a conjunction of optional conditions;
that composition (and every lookup by key) is the same on SQLite and PostgreSQL, only the
spelling differs: the
placeholder (``?`` or ``$n``), a value "in a list" (one placeholder per item, or one array
parameter), and two terms a `Dialect` names (a label match, a substring test). `QueryReads`
builds and runs them; each reader brings its driver call (`QueryReads._rows`) and its
`Dialect`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from egw.core.audit import EventFilter
from egw.core.model import TERMINAL, Event, Task, format_time
from egw.store.rows import EVENT_COLUMNS, TASK_COLUMNS, event_from_row, task_from_row

_TERMINAL = [str(s) for s in TERMINAL]


@dataclass(frozen=True)
class Dialect:
    """How one database spells what the queries share; ``{}`` in a term is a placeholder."""

    numbered: bool  # ``$1, $2…`` (PostgreSQL), else ``?`` (SQLite)
    label: str  # the task's ``labels`` hold key ``{}`` with value ``{}``
    contains: str  # the task's ``name`` contains ``{}``


class Where:
    """Conditions joined by AND, and their parameters in placeholder order."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._terms: list[str] = []
        self.params: list[Any] = []

    def mark(self, value: Any) -> str:
        """A placeholder for ``value``, whose parameter comes after those added before."""
        self.params.append(value)
        return f"${len(self.params)}" if self._dialect.numbered else "?"

    def add(self, term: str, *values: Any) -> None:
        """``term`` with ``{}`` for each value's placeholder."""
        self._terms.append(term.format(*[self.mark(v) for v in values]))

    def in_list(self, column: str, values: Collection[str], *, negate: bool = False) -> str:
        """The term: ``column`` is (``negate``: is not) one of ``values``; an empty list
        matches nothing (``negate``: everything)."""
        if self._dialect.numbered:
            array = self.mark(list(values))
            return f"{column} {'<> ALL' if negate else '= ANY'}({array}::text[])"
        if not values:
            return "1" if negate else "0"
        marks = ",".join(self.mark(v) for v in values)
        return f"{column} {'NOT IN' if negate else 'IN'} ({marks})"

    def within(self, column: str, values: Collection[str]) -> None:
        self._terms.append(self.in_list(column, values))

    def namespaces(self, namespaces: frozenset[str] | None) -> None:
        """Only rows of ``namespaces`` (None: of any; empty: of none)."""
        if namespaces is not None:
            self.within("namespace", sorted(namespaces))

    def clause(self) -> str:
        """`` WHERE`` and the conditions, or nothing when there are none."""
        return " WHERE " + " AND ".join(self._terms) if self._terms else ""


class QueryReads(ABC):
    """The reads (`egw.store.backend.Reads`) both dialects answer with the same SQL but for
    its placeholders and lists."""

    dialect: Dialect

    @abstractmethod
    async def _rows(self, sql: str, params: list[Any]) -> list[Any]:
        """The rows ``sql`` returns with ``params``: the driver's call, in each reader."""

    async def task(self, task_id: str) -> Task | None:
        w = Where(self.dialect)
        w.add("id = {}", task_id)
        rows = await self._rows(f"SELECT {TASK_COLUMNS} FROM tasks{w.clause()}", w.params)
        return task_from_row(rows[0]) if rows else None

    async def task_by_upstream(self, provider: str, upstream_id: str) -> Task | None:
        w = Where(self.dialect)
        w.add("provider = {} AND upstream_id = {}", provider, upstream_id)
        sql = f"SELECT {TASK_COLUMNS} FROM tasks{w.clause()} ORDER BY submit_seq DESC LIMIT 1"
        rows = await self._rows(sql, w.params)
        return task_from_row(rows[0]) if rows else None

    async def upstream_ids(self, provider: str) -> list[tuple[str, str]]:
        """(upstream id, task id) of ``provider``'s tasks that have one, oldest submit first."""
        w = Where(self.dialect)
        w.add("provider = {} AND upstream_id IS NOT NULL", provider)
        sql = f"SELECT upstream_id, id FROM tasks{w.clause()} ORDER BY submit_seq"
        rows = await self._rows(sql, w.params)
        return [(str(upstream_id), str(task_id)) for upstream_id, task_id in rows]

    async def cursor(self, key: str) -> str | None:
        w = Where(self.dialect)
        w.add("key = {}", key)
        rows = await self._rows(f"SELECT value FROM cursors{w.clause()}", w.params)
        return str(rows[0][0]) if rows else None

    async def pruned_seq(self) -> int:
        rows = await self._rows("SELECT pruned_seq FROM pruned WHERE id = 1", [])
        return int(rows[0][0]) if rows else 0

    async def max_seq(self) -> int:
        rows = await self._rows("SELECT COALESCE(MAX(seq), 0) FROM events", [])
        return int(rows[0][0])

    async def stuck_counts(self) -> dict[str, int]:
        rows = await self._rows(
            "SELECT provider, COUNT(*) FROM tasks WHERE stuck IS NOT NULL GROUP BY provider", []
        )
        return {str(provider): int(n) for provider, n in rows}

    async def counts_by_status(self, by: str = "provider") -> dict[str, dict[str, int]]:
        """Task counts by ``by`` (``provider`` or ``namespace``), then status."""
        column = {"provider": "provider", "namespace": "namespace"}[by]
        rows = await self._rows(
            f"SELECT {column}, status, COUNT(*) FROM tasks GROUP BY {column}, status", []
        )
        out: dict[str, dict[str, int]] = {}
        for key, status, n in rows:
            out.setdefault(str(key), {})[str(status)] = int(n)
        return out

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
        w = Where(self.dialect)
        w.namespaces(namespaces)
        if provider:
            w.add("provider = {}", provider)
        if status:
            w.within("status", status)
        for key, value in (labels or {}).items():
            w.add(self.dialect.label, key, value)
        if stuck is not None:
            w.add("stuck IS NOT NULL" if stuck else "stuck IS NULL")
        if name:
            w.add(self.dialect.contains, name)
        if before is not None:
            w.add("submit_seq < {}", before)
        sql = f"SELECT {TASK_COLUMNS} FROM tasks{w.clause()} ORDER BY submit_seq DESC"
        sql += f" LIMIT {w.mark(limit)}"
        return [task_from_row(r) for r in await self._rows(sql, w.params)]

    async def active(self, provider: str) -> list[Task]:
        """``provider``'s tasks not finished or whose logs are not complete, oldest first."""
        w = Where(self.dialect)
        w.add("provider = {}", provider)
        not_over = w.in_list("status", _TERMINAL, negate=True)
        w.add(f"({not_over} OR logs_complete = 0)")
        sql = f"SELECT {TASK_COLUMNS} FROM tasks{w.clause()} ORDER BY submit_seq"
        rows = await self._rows(sql, w.params)
        return [task_from_row(r) for r in rows]

    async def unfinished(self) -> list[Task]:
        w = Where(self.dialect)
        w.add(w.in_list("status", _TERMINAL, negate=True))
        sql = f"SELECT {TASK_COLUMNS} FROM tasks{w.clause()} ORDER BY submit_seq"
        return [task_from_row(r) for r in await self._rows(sql, w.params)]

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
        w = Where(self.dialect)
        w.add("seq > {}", after)
        w.namespaces(namespaces)
        if task_id:
            w.add("task_id = {}", task_id)
        if provider:
            w.add("provider = {}", provider)
        if status_only:
            w.add("applied = 1")
        return await self._events(w, limit)

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
        w = Where(self.dialect)
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
            w.within("kind", where.kinds)
        # ``at`` is stored as fixed-width RFC 3339 in UTC: text order is time order
        if where.since is not None:
            w.add("at >= {}", format_time(where.since))
        if where.until is not None:
            w.add("at < {}", format_time(where.until))
        return await self._events(w, limit)

    async def _events(self, w: Where, limit: int) -> list[Event]:
        sql = f"SELECT {EVENT_COLUMNS} FROM events{w.clause()} ORDER BY seq LIMIT {w.mark(limit)}"
        return [event_from_row(r) for r in await self._rows(sql, w.params)]
