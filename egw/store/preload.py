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
    for actor, keys in _grouped(need.idem_keys).items():
        # by actor too: the key is (actor, key), and a lookup by key alone scans every
        # key stored, for each batch of submits (bench "submits")
        rows = await statements.select_in(conn, statements.SELECT_IDEMPOTENCY, keys, (actor,))
        for key, request_hash, task_id in rows:
            b.idem[(actor, key)] = (request_hash, task_id)
            if task_id not in cache:
                want.add(task_id)
    if want:
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id IN"
        for row in await statements.select_in(conn, sql, want):
            remember(task_from_row(row))
    for source, ids in _grouped(need.deliveries).items():
        # by source too: the index is (source, delivery_id), and a lookup by delivery id
        # alone scans all of it, every stored delivery, for each batch (bench "webhooks")
        rows = await statements.select_in(conn, statements.SELECT_DELIVERIES, ids, (source,))
        b.deliveries.update((source, str(r[0])) for r in rows)


def _grouped(pairs: set[tuple[str, str]]) -> dict[str, set[str]]:
    """(a, b) pairs as {a: {b, ...}}."""
    out: dict[str, set[str]] = {}
    for first, second in pairs:
        out.setdefault(first, set()).add(second)
    return out
