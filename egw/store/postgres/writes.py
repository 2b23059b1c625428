"""PostgreSQL's half of the writer (`egw.store.backend.Writes`): ordering readers can trust.

Theory of operation
-------------------
On SQLite one process writes, so the writer numbers events from its own counter.
On PostgreSQL several writers may append to one log (replicas, stage 2 of issue #17),
and a reader that has seen event N must never later find an event numbered below N
that committed after it looked: ``Last-Event-ID`` resume, ``/v1/events`` replay and
blocking queries all resume "after N". Sequences (``bigserial``) do not give that:
numbers are handed out at insert, commits land in any order, and a gap fills later.

So every batch's transaction first takes one transaction-scoped advisory lock
(``pg_advisory_xact_lock(LOG_KEY)``), then, in a *new statement* (READ COMMITTED takes
its snapshot per statement: one taken before the lock was granted could miss the
previous holder's commit), reads the log's high-water mark: the largest ``seq``
committed (or pruned: ``pruned.pruned_seq``, so a number is never reused) and the
largest ``submit_seq``. It numbers its events after them and commits; PostgreSQL makes
a commit visible before it releases the transaction's locks, so the next holder's
snapshot sees it. Commit order is ``seq`` order: a reader can never see a gap that
fills later. ``gateway_events`` takes its ``seq`` from an identity column inside the
same locked transaction: the same holds.

The cost: batches of different writers serialise on the lock (one lock and one extra
round trip per batch, not per event: group commit amortises it; ``bench/run.py``
part ``writer`` measures appends/s against SQLite in the same run).

The feed below is also the cache's invalidation: if the last ``changes`` mark is above
the last this writer saw, another writer committed, and the tasks of those rows (a new
event, or only new output: a task's log offset lives in its projection) are evicted
from the projection cache before the batch is computed (the preload reads them again,
in the same transaction, under the lock): the cache is correct for replicas. Without it
two replicas appending to one task's log (the lease holder and the one it replaced, for
a moment) computed the same offset, and the second batch failed on ``log_chunks``' key.
Rows older than the sweep are gone: a writer that has not looked since forgets its
whole cache.

The feed of the other replicas: each batch that changed something also inserts one row
of ``changes`` (its replica, its events' range, the tasks, output ranges, completions
and prunes it made; ``mark`` from a sequence taken under the same lock, so mark order is
commit order) and sends ``NOTIFY egw_log`` with the mark, delivered at commit. The
payload is a hint; the row is the truth (``feed.py`` reads it).

A lost connection is a refusal like a full disk on SQLite: the batch is retried with
backoff, and the next attempt connects again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg

from egw.core.model import TERMINAL, Task, format_time
from egw.errors import StoreError
from egw.store.batch import Batch, Statements, row_sets
from egw.store.ops import Op, Preload
from egw.store.postgres.conn import CHANNEL, LOCK_TIMEOUT, LOG_KEY, connect, new_replica_id
from egw.store.rows import EVENT_COLUMNS, EVENT_FIELDS, TASK_COLUMNS, TASK_FIELDS, task_from_row
from egw.store.rows import task_to_row as _task_row


def _marks(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


INSERT_EVENTS = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({_marks(len(EVENT_FIELDS))})"
UPSERT_TASKS = (
    f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({_marks(len(TASK_FIELDS))})"
    f" ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in TASK_FIELDS[1:])}"
)
INSERT_LOGS = "INSERT INTO log_chunks (task_id, pos, stream, data) VALUES ($1, $2, $3, $4)"
INSERT_IDEMPOTENCY = (
    "INSERT INTO idempotency_keys (actor, key, request_hash, task_id, created_at)"
    " VALUES ($1, $2, $3, $4, $5)"
)
# as statements.py: PostgreSQL too evaluates SET expressions on the row before the update
DROP_LOGS = (
    "DELETE FROM log_chunks WHERE task_id = $1 AND pos >= $2 AND pos < $3"
    " AND pos + length(data) <= $4"
)
CUT_LOG = (
    "UPDATE log_chunks SET pos = $1, data = substr(data, ($2 - pos + 1)::int)"
    " WHERE task_id = $3 AND pos >= $4 AND pos < $5 AND pos + length(data) > $6"
)
CUT_HEAD = (
    "UPDATE log_chunks SET data = substr(data, 1, ($1 - pos)::int)"
    " WHERE task_id = $2 AND pos < $3 AND pos + length(data) > $4"
)
INSERT_GATEWAY_EVENTS = (
    "INSERT INTO gateway_events (kind, provider, target, at, data) VALUES ($1, $2, $3, $4, $5)"
)
UPSERT_CURSORS = (
    "INSERT INTO cursors (key, value) VALUES ($1, $2)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
STATEMENTS = Statements(
    events=INSERT_EVENTS,
    tasks=UPSERT_TASKS,
    logs=INSERT_LOGS,
    cut_head=CUT_HEAD,
    drop_logs=DROP_LOGS,
    cut_log=CUT_LOG,
    idempotency=INSERT_IDEMPOTENCY,
    cursors=UPSERT_CURSORS,
    gateway_events=INSERT_GATEWAY_EVENTS,
)
HIGH_WATER = (
    "SELECT GREATEST((SELECT COALESCE(MAX(seq), 0) FROM events),"
    " (SELECT pruned_seq FROM pruned WHERE id = 1)),"
    " (SELECT COALESCE(MAX(submit_seq), 0) FROM tasks),"
    " (SELECT COALESCE(MAX(mark), 0) FROM changes), (SELECT MIN(mark) FROM changes)"
)
#: what other writers changed since a mark: their tasks' projections are stale here
CHANGED_SINCE = "SELECT data FROM changes WHERE mark > $1 AND replica <> $2"
PROBE_BYTES = 64 << 10
INSERT_CHANGE = (
    "INSERT INTO changes (mark, replica, seq_from, seq_to, data)"
    " VALUES (nextval('changes_mark'), $1, $2, $3, $4) RETURNING mark"
)
#: every this many batches, a writer deletes the feed's rows older than CHANGES_KEEP
CHANGES_SWEEP = 1000
CHANGES_KEEP = "10 minutes"

#: failures of the store, not of a batch: the server is gone, out of space, read-only,
#: shutting down, refusing connections (SQLSTATE classes 08, 53, 57, 25006, 55P03)
_REFUSALS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.LockNotAvailableError,
    StoreError,
)


def _no_nul(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """PostgreSQL's text cannot hold NUL, SQLite's can: a NUL that reached a text column
    (an upstream's reason, say; egw's own validators refuse NUL, and JSON escapes it) is
    stored as U+FFFD rather than failing the batch and losing the change."""
    if not any(isinstance(v, str) and "\x00" in v for v in row):
        return row
    return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row)


def task_row(t: Task) -> tuple[Any, ...]:
    """`rows.task_to_row`, with ``timeout_s`` a float (asyncpg's float8 wants one)."""
    row = _task_row(t)
    timeout = TASK_FIELDS.index("timeout_s")
    if row[timeout] is None:
        return row
    return (*row[:timeout], float(row[timeout]), *row[timeout + 1 :])


class PgWrites:
    """The write connection of one replica, and its batches."""

    def __init__(self, url: str, *, replica: str | None = None) -> None:
        self._url = url
        #: this replica's id, written in each ``changes`` row it makes
        self.replica = replica or new_replica_id()
        self.conn: Any = None
        self._tx: Any = None
        self._seq_from = 0
        self._batches = 0
        #: the last ``changes`` mark this writer has taken into account (None: no batch
        #: yet, nothing cached: what was committed before is no news)
        self._mark: int | None = None

    async def open(self) -> None:
        self.conn = await connect(self._url, lock_timeout=LOCK_TIMEOUT)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    async def _ready(self) -> Any:
        """The connection, connected again if lost."""
        if self.conn is None or self.conn.is_closed():
            self.conn = None
            await self.open()
        return self.conn

    def refused(self, exc: BaseException) -> bool:
        # a connection that broke mid-operation may answer with a client-side error first
        return isinstance(exc, _REFUSALS) or self.conn is None or self.conn.is_closed()

    async def load_counters(self) -> tuple[int, int]:
        row = await (await self._ready()).fetchrow(HIGH_WATER)
        return int(row[0]), int(row[1])

    async def begin(self, b: Batch, evict: Callable[[list[str] | None], None]) -> None:
        conn = await self._ready()
        self._tx = conn.transaction()
        await self._tx.start()
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOG_KEY)
        # a snapshot taken under the lock
        seq, submit_seq, mark, oldest = await conn.fetchrow(HIGH_WATER)
        if self._mark is None:
            self._mark = int(mark)
        elif mark > self._mark:  # another writer committed: its tasks' projections are stale
            if oldest is not None and oldest > self._mark + 1:
                evict(None)  # swept rows this writer never saw: forget every projection
            else:
                rows = await conn.fetch(CHANGED_SINCE, self._mark, self.replica)
                evict([str(t) for r in rows for t in _changed_tasks(json.loads(r[0]))])
            self._mark = int(mark)
        b.seq = max(b.seq, int(seq))
        b.submit_seq = max(b.submit_seq, int(submit_seq))
        self._seq_from = b.seq

    async def preload(
        self,
        cache: Mapping[str, Task],
        remember: Callable[[Task], None],
        ops: list[Op[Any]],
        b: Batch,
    ) -> None:
        """As ``egw/store/preload.py``, one query per kind with an array parameter."""
        conn = self.conn
        need = Preload()
        for op in ops:
            op.preload(need)
        # a value with a NUL was never stored as such (`_no_nul`), and cannot be a parameter
        idem = [(a, k) for a, k in need.idem_keys if "\x00" not in a + k]
        deliveries = [(s, d) for s, d in need.deliveries if "\x00" not in s + d]
        want = {task_id for task_id in need.tasks if task_id not in cache}
        if idem:
            # by (actor, key) and (source, delivery id): the indexes' whole keys
            rows = await conn.fetch(
                "SELECT actor, key, request_hash, task_id FROM idempotency_keys"
                " WHERE (actor, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                [a for a, _ in idem],
                [k for _, k in idem],
            )
            for actor, key, request_hash, task_id in rows:
                b.idem[(actor, key)] = (request_hash, task_id)
                if task_id not in cache:
                    want.add(task_id)
        if want:
            rows = await conn.fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1::text[])", list(want)
            )
            for row in rows:
                remember(task_from_row(row))
        if deliveries:
            rows = await conn.fetch(
                "SELECT source, delivery_id FROM events WHERE delivery_id IS NOT NULL"
                " AND (source, delivery_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                [s for s, _ in deliveries],
                [d for _, d in deliveries],
            )
            b.deliveries.update((str(r[0]), str(r[1])) for r in rows)

    async def write(self, b: Batch) -> None:
        conn = self.conn
        for sql, rows in row_sets(b, STATEMENTS, task_row, _no_nul):
            await conn.executemany(sql, rows)
        for before in b.prune:
            cutoff = format_time(before)
            b.commit.pruned.extend(await _prune(conn, cutoff))
            await conn.execute("DELETE FROM gateway_events WHERE at <= $1", cutoff)
        await self._record_change(conn, b)
        tx, self._tx = self._tx, None
        await tx.commit()

    async def _record_change(self, conn: Any, b: Batch) -> None:
        """The batch's row of ``changes`` and its NOTIFY (sent at commit), if it changed
        anything another replica shows: see the module's docstring."""
        c = b.commit
        if not (c.events or b.staged or c.logs or c.logs_completed or c.pruned):
            return
        ranges: dict[str, list[int]] = {}
        for chunk in c.logs:
            r = ranges.setdefault(chunk.task_id, [chunk.offset, chunk.end])
            r[0], r[1] = min(r[0], chunk.offset), max(r[1], chunk.end)
        data = {
            "tasks": list(b.staged),
            "logs": [[t, lo, hi] for t, (lo, hi) in ranges.items()],
            "completed": c.logs_completed,
            "pruned": c.pruned,
        }
        row = (self.replica, self._seq_from, b.seq, json.dumps(data))
        mark = await conn.fetchval(INSERT_CHANGE, *row)
        c.mark = self._mark = int(mark)  # under the lock: no other writer's in between
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(mark))
        self._batches += 1
        if self._batches % CHANGES_SWEEP == 0:
            await conn.execute(f"DELETE FROM changes WHERE at < now() - interval '{CHANGES_KEEP}'")

    async def finish(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None:
            await tx.rollback()  # it read, under the lock; nothing to keep

    async def rollback(self) -> None:
        tx, self._tx = self._tx, None
        if tx is None or self.conn is None:
            return
        try:
            await tx.rollback()
        except Exception:  # noqa: BLE001 - the connection is broken: drop it, reconnect later
            self.conn.terminate()
            self.conn = None
            return
        if self.conn.is_closed():
            self.conn = None

    async def probe(self) -> None:
        conn = await self._ready()
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO cursors (key, value) VALUES ('egw.probe', repeat('0', $1))",
                PROBE_BYTES,
            )
            await conn.execute("DELETE FROM cursors WHERE key = 'egw.probe'")

    async def used_bytes(self) -> int:
        """The on-disk size of egw's tables, with their indexes and TOAST (the space of
        deleted rows is reused, as SQLite's free pages are, once vacuum has passed)."""
        conn = await self._ready()
        return int(
            await conn.fetchval(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            )
        )


def _changed_tasks(data: Mapping[str, Any]) -> set[str]:
    """The tasks a ``changes`` row names: changed, given output, completed, pruned."""
    named = set(data.get("tasks") or ()) | set(data.get("completed") or ())
    named |= set(data.get("pruned") or ())
    return named | {str(t) for t, *_ in data.get("logs") or ()}


async def _prune(conn: Any, before: str | None) -> list[str]:
    ids = [
        str(r[0])
        for r in await conn.fetch(
            "SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at <= $1"
            " AND status = ANY($2::text[])",
            before,
            [str(s) for s in TERMINAL],
        )
    ]
    if not ids:
        return ids
    top = await conn.fetchval(
        "SELECT COALESCE(MAX(seq), 0) FROM events WHERE task_id = ANY($1::text[])", ids
    )
    await conn.execute(
        "UPDATE pruned SET pruned_seq = GREATEST(pruned_seq, $1) WHERE id = 1", int(top)
    )
    for table, col in (
        ("events", "task_id"),
        ("log_chunks", "task_id"),
        ("idempotency_keys", "task_id"),
        ("tasks", "id"),
    ):
        await conn.execute(f"DELETE FROM {table} WHERE {col} = ANY($1::text[])", ids)
    return ids


__all__ = ["PgWrites"]
