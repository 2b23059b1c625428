"""The SQL of the writer: a batch's rows in one transaction, one executemany per table.

Plain synchronous functions of a `sqlite3.Connection`: each runs whole on the writer's own
thread (``sqlite_writes.py``), so that a batch's write is one call to that thread, not one
per statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from egw.core.model import TERMINAL, format_time
from egw.store.batch import Batch, Statements, row_sets
from egw.store.rows import (
    EVENT_COLUMNS,
    EVENT_FIELDS,
    TASK_COLUMNS,
    TASK_FIELDS,
    placeholders,
    task_to_row,
)

#: SQLite's default limit is 999 parameters per statement; lists are sent in parts of this size
IN_CHUNK = 500

INSERT_EVENTS = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({placeholders(EVENT_FIELDS)})"
UPSERT_TASKS = (
    f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({placeholders(TASK_FIELDS)})"
    f" ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in TASK_FIELDS[1:])}"
)
INSERT_LOGS = "INSERT INTO log_chunks (task_id, pos, stream, data) VALUES (?, ?, ?, ?)"
INSERT_IDEMPOTENCY = (
    "INSERT INTO idempotency_keys (actor, key, request_hash, task_id, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
#: what a batch reads first (`egw.store.preload`), each followed by ``(?, ...)``: keyed as
#: their indexes are, so that each is a search, never a scan of every stored key or delivery
SELECT_IDEMPOTENCY = (
    "SELECT key, request_hash, task_id FROM idempotency_keys WHERE actor = ? AND key IN"
)
SELECT_DELIVERIES = "SELECT delivery_id FROM events WHERE source = ? AND delivery_id IN"
#: a task's stored output past its head and before its tail window: chunks wholly inside
#: are deleted, the one that straddles the window's start is cut to start there
#: (SQLite evaluates ``substr(data, ...)`` on the row before the update: bytes of a BLOB)
DROP_LOGS = (
    "DELETE FROM log_chunks WHERE task_id = ? AND pos >= ? AND pos < ? AND pos + length(data) <= ?"
)
CUT_LOG = (
    "UPDATE log_chunks SET pos = ?, data = substr(data, ? - pos + 1)"
    " WHERE task_id = ? AND pos >= ? AND pos < ? AND pos + length(data) > ?"
)
CUT_HEAD = (
    "UPDATE log_chunks SET data = substr(data, 1, ? - pos)"
    " WHERE task_id = ? AND pos < ? AND pos + length(data) > ?"
)
INSERT_GATEWAY_EVENTS = (
    "INSERT INTO gateway_events (kind, provider, target, at, data) VALUES (?, ?, ?, ?, ?)"
)
UPSERT_CURSORS = (
    "INSERT INTO cursors (key, value) VALUES (?, ?)"
    " ON CONFLICT(key) DO UPDATE SET value = excluded.value"
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


def refused(exc: BaseException) -> bool:
    """Whether SQLite refused a write for a reason of the store's, not of the batch's:
    the disk is full, the file is read-only, locked, unreadable or damaged."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except Exception:  # noqa: BLE001 - no transaction open (SQLite may have ended it)
        pass


def _parts(values: Iterable[str]) -> Iterable[list[str]]:
    items = list(values)
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


def select_in(
    conn: sqlite3.Connection, sql: str, values: Iterable[str], first: tuple[Any, ...] = ()
) -> list[Any]:
    """The rows of ``sql`` ending in ``... IN`` for these values (any number of them);
    ``first``: the parameters of the ``?`` placed before the ``IN``."""
    found: list[Any] = []
    for part in _parts(values):
        sql_part = f"{sql} ({placeholders(tuple(part))})"
        found.extend(conn.execute(sql_part, [*first, *part]).fetchall())
    return found


def write(conn: sqlite3.Connection, b: Batch) -> None:
    """Write a batch in one transaction; the ids it pruned go to ``b.commit.pruned``.

    All or nothing: the first statement that fails stops the rest at once (they run in this
    one call), and the transaction, if SQLite has not ended it by itself (it may, on
    ``SQLITE_FULL``, ``SQLITE_IOERR``, ``SQLITE_BUSY`` or ``SQLITE_NOMEM``:
    https://www.sqlite.org/lang_transaction.html, "Response To Errors Within A
    Transaction"), is rolled back before the error is raised. No statement of the batch ever
    runs outside its transaction, where it would commit alone.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        _statements(conn, b)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            rollback(conn)
        raise


def _statements(conn: sqlite3.Connection, b: Batch) -> None:
    for sql, rows in row_sets(b, STATEMENTS, task_to_row):
        conn.executemany(sql, rows)
    for before in b.prune:
        b.commit.pruned.extend(_prune(conn, before))
        conn.execute("DELETE FROM gateway_events WHERE at <= ?", (format_time(before),))


#: the size of the write that tells whether the store takes writes again (a log chunk's)
PROBE_BYTES = 64 << 10


def probe(conn: sqlite3.Connection) -> None:
    """Commit a write of ``PROBE_BYTES`` that leaves nothing behind; raises what SQLite
    says if the store cannot take it (the transaction is left to the caller to roll back)."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO cursors (key, value) VALUES ('egw.probe', zeroblob(?))", (PROBE_BYTES,)
    )
    conn.execute("DELETE FROM cursors WHERE key = 'egw.probe'")
    conn.execute("COMMIT")


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use (its freed pages are reused before it grows)."""
    row = conn.execute(
        "SELECT (SELECT page_count FROM pragma_page_count())"
        " - (SELECT freelist_count FROM pragma_freelist_count()),"
        " (SELECT page_size FROM pragma_page_size())"
    ).fetchone()
    return int(row[0]) * int(row[1]) if row else 0


def _prune(conn: sqlite3.Connection, before: datetime) -> list[str]:
    terminal = tuple(str(s) for s in TERMINAL)
    ids = [
        str(r[0])
        for r in conn.execute(
            # ``<=``: times are stored to the millisecond, so a task that finished in the same
            # millisecond as the cutoff is "before" it too (retention 0 prunes everything ended)
            "SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at <= ?"
            f" AND status IN ({placeholders(terminal)})",
            [format_time(before), *terminal],
        ).fetchall()
    ]
    for part in _parts(ids):
        q = placeholders(tuple(part))
        row = conn.execute(
            f"SELECT COALESCE(MAX(seq), 0) FROM events WHERE task_id IN ({q})", part
        ).fetchone()
        top = int(row[0]) if row else 0
        # the horizon of pruned events: a client whose cursor is older is told to re-read
        conn.execute("UPDATE pruned SET pruned_seq = MAX(pruned_seq, ?) WHERE id = 1", (top,))
        for table, col in (
            ("events", "task_id"),
            ("log_chunks", "task_id"),
            ("idempotency_keys", "task_id"),
            ("tasks", "id"),
        ):
            conn.execute(f"DELETE FROM {table} WHERE {col} IN ({q})", part)
    return ids


def load_counters(conn: sqlite3.Connection) -> tuple[int, int]:
    """The last event sequence number ever used (pruned ones too) and the last submit number."""
    row = conn.execute(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events),"
        " (SELECT COALESCE(MAX(submit_seq), 0) FROM tasks),"
        " (SELECT seq FROM sqlite_sequence WHERE name = 'events')"
    ).fetchone()
    assert row is not None
    # never reuse a seq, even one whose event was pruned
    return max(int(row[0]), int(row[2] or 0)), int(row[1])
