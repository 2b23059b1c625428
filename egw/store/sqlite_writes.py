"""SQLite's half of the writer (`egw.store.backend.Writes`): ``statements.py`` and
``preload.py`` on the one write connection."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aiosqlite

from egw.core.model import Task
from egw.store.batch import Batch
from egw.store.ops import Op
from egw.store.preload import preload
from egw.store.statements import load_counters, probe, refused, rollback, used_bytes, write


class SqliteWrites:
    """`egw.store.backend.Writes` on SQLite's one write connection. One process writes a
    SQLite file (``lock.py``), so the writer's own counters are exact: `begin` has nothing
    to do, and ``BEGIN IMMEDIATE`` in `write` opens the transaction only for a batch that
    writes something."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    def refused(self, exc: BaseException) -> bool:
        return refused(exc)

    async def load_counters(self) -> tuple[int, int]:
        return await load_counters(self.conn)

    async def begin(self, b: Batch, evict: Callable[[list[str]], None]) -> None:
        pass  # the only writer: nobody else moves the counters

    async def preload(
        self,
        cache: Mapping[str, Task],
        remember: Callable[[Task], None],
        ops: list[Op[Any]],
        b: Batch,
    ) -> None:
        await preload(self.conn, cache, remember, ops, b)

    async def write(self, b: Batch) -> None:
        await write(self.conn, b)

    async def finish(self) -> None:
        pass  # nothing was opened

    async def rollback(self) -> None:
        await rollback(self.conn)

    async def probe(self) -> None:
        await probe(self.conn)

    async def used_bytes(self) -> int:
        return await used_bytes(self.conn)


__all__ = ["SqliteWrites"]
