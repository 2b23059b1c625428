"""What a batch reads before it is applied: tasks the writer's cache lacks, recorded
idempotency keys and deliveries (one query per kind, for the whole batch)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aiosqlite

from egw.core.model import Task
from egw.store import statements
from egw.store.batch import Batch
from egw.store.ops import Op, Preload
from egw.store.rows import TASK_COLUMNS, task_from_row


async def preload(
    conn: aiosqlite.Connection,
    cache: Mapping[str, Task],
    remember: Callable[[Task], None],
    ops: list[Op[Any]],
    b: Batch,
) -> None:
    """Fill ``b`` (idempotency keys, deliveries seen) and ``remember`` the tasks the
    operations of the batch need that ``cache`` lacks."""
    need = Preload()
    for op in ops:
        op.preload(need)
    want = {task_id for task_id in need.tasks if task_id not in cache}
    if need.idem_keys:
        rows = await statements.select_in(
            conn,
            "SELECT actor, key, request_hash, task_id FROM idempotency_keys WHERE key IN",
            need.idem_keys,
        )
        for actor, key, request_hash, task_id in rows:
            b.idem[(actor, key)] = (request_hash, task_id)
            if task_id not in cache:
                want.add(task_id)
    if want:
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id IN"
        for row in await statements.select_in(conn, sql, want):
            remember(task_from_row(row))
    if need.deliveries:
        rows = await statements.select_in(
            conn,
            "SELECT source, delivery_id FROM events WHERE delivery_id IN",
            need.deliveries,
        )
        b.deliveries.update((str(r[0]), str(r[1])) for r in rows)
