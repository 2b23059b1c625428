"""What a batch reads before it is applied: tasks the writer's cache lacks, recorded
idempotency keys and deliveries (one query per kind, for the whole batch), all in one call
on the write connection's thread (``sqlite_writes.py``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from egw.core.model import Task
from egw.store import statements
from egw.store.batch import Batch
from egw.store.ops import Preload
from egw.store.rows import TASK_COLUMNS, task_from_row


def lookups(
    conn: sqlite3.Connection, cache: Mapping[str, Task], need: Preload, want: set[str], b: Batch
) -> list[Task]:
    """Fill ``b`` (idempotency keys, deliveries seen) and return the tasks the operations
    need that ``cache`` lacks: ``want``, and those of the keys found."""
    want = set(want)
    for actor, keys in _grouped(need.idem_keys).items():
        # by actor too: the key is (actor, key), and a lookup by key alone scans every
        # key stored, for each batch of submits (bench "submits")
        rows = statements.select_in(conn, statements.SELECT_IDEMPOTENCY, keys, (actor,))
        for key, request_hash, task_id in rows:
            b.idem[(actor, key)] = (request_hash, task_id)
            if task_id not in cache:
                want.add(task_id)
    found: list[Task] = []
    if want:
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id IN"
        found = [task_from_row(row) for row in statements.select_in(conn, sql, want)]
    for source, ids in _grouped(need.deliveries).items():
        # by source too: the index is (source, delivery_id), and a lookup by delivery id
        # alone scans all of it, every stored delivery, for each batch (bench "webhooks")
        rows = statements.select_in(conn, statements.SELECT_DELIVERIES, ids, (source,))
        b.deliveries.update((source, str(r[0])) for r in rows)
    return found


def _grouped(pairs: set[tuple[str, str]]) -> dict[str, set[str]]:
    """(a, b) pairs as {a: {b, ...}}."""
    out: dict[str, set[str]] = {}
    for first, second in pairs:
        out.setdefault(first, set()).add(second)
    return out
