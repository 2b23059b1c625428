"""SQLite's half of the writer (`egw.store.backend.Writes`): ``statements.py`` and
``preload.py`` on the one write connection, a plain `sqlite3.Connection` owned by one
thread of its own (`WriteThread`).

Why a thread of the writer's own, and not aiosqlite as the reader has: what a batch costs
is counted in turns of the event loop. Through aiosqlite each statement is a call to its
thread whose answer is taken at the loop's next turn, and under load a turn takes about
5 ms (bench part "webhooks", ``bench/_servers.py --stats``): a commit was five turns or
more (the lookups, ``BEGIN``, one ``executemany`` per table, ``COMMIT``), and every
delivery or submit waiting for it waited that long. Here a batch's lookups are one call to
the thread (`preload.lookups`) and its write, ``BEGIN`` to ``COMMIT``, another
(`statements.write`): two turns a batch. Measured (``bench/README.md``, parts 4 and 5, three
runs each, the median): the p99 of the mixed webhook run at 64 connections went from 64 to
41 ms (egw's own deliveries in it, 78 to 48 ms), queued submits from 0.378 to 0.412 of the
same run's storage floor.

It is also what keeps a batch whole: the statements of a write run in one synchronous
call, so the first that fails stops the others, and the call rolls back what SQLite has
not already (``statements.write``); nothing of a batch can commit without the rest.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from egw.core.model import Task
from egw.store import statements
from egw.store.batch import Batch
from egw.store.ops import Op, Preload
from egw.store.preload import lookups

P = ParamSpec("P")
R = TypeVar("R")


class WriteThread:
    """The write connection and the one thread that uses it, from its opening (`open`)
    to its closing (`close`): every use is `run`, a function of the connection called on
    that thread (sqlite3's ``check_same_thread`` holds: no other thread ever touches it)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="egw-sqlite-writer")
        self._conn: sqlite3.Connection | None = None

    async def open(self, opener: Callable[[], sqlite3.Connection]) -> None:
        self._conn = await asyncio.get_running_loop().run_in_executor(self._pool, opener)

    async def run(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], R], *args: P.args, **kw: P.kwargs
    ) -> R:
        """``fn(connection, *args, **kw)`` on the connection's thread, in one call."""
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("the write connection is closed")
        call = functools.partial(fn, conn, *args, **kw)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def close(self) -> None:
        """Close the connection on its thread, then stop the thread (both even if closing
        fails: a thread left waiting for work is one the interpreter waits for at exit)."""
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        finally:
            self._pool.shutdown(wait=False)


class SqliteWrites:
    """`egw.store.backend.Writes` on SQLite's one write connection. One process writes a
    SQLite file (``lock.py``), so the writer's own counters are exact: `begin` has nothing
    to do, and ``BEGIN IMMEDIATE`` in `write` opens the transaction only for a batch that
    writes something."""

    def __init__(self, thread: WriteThread) -> None:
        self.thread = thread

    def refused(self, exc: BaseException) -> bool:
        return statements.refused(exc)

    async def load_counters(self) -> tuple[int, int]:
        return await self.thread.run(statements.load_counters)

    async def begin(self, b: Batch, evict: Callable[[list[str] | None], None]) -> None:
        pass  # the only writer: nobody else moves the counters

    async def preload(
        self,
        cache: Mapping[str, Task],
        remember: Callable[[Task], None],
        ops: list[Op[Any]],
        b: Batch,
    ) -> None:
        need = Preload()
        for op in ops:
            op.preload(need)
        want = {task_id for task_id in need.tasks if task_id not in cache}
        if not (want or need.idem_keys or need.deliveries):
            return  # nothing to read: no call to the thread at all
        # the cache is only read there, and only this writer's loop changes it, which is
        # waiting for this call; the tasks found enter the cache here, on the loop
        for task in await self.thread.run(lookups, cache, need, want, b):
            remember(task)

    async def write(self, b: Batch) -> None:
        await self.thread.run(statements.write, b)

    async def finish(self) -> None:
        pass  # nothing was opened

    async def rollback(self) -> None:
        await self.thread.run(statements.rollback)

    async def probe(self) -> None:
        await self.thread.run(statements.probe)

    async def used_bytes(self) -> int:
        return await self.thread.run(statements.used_bytes)


__all__ = ["SqliteWrites", "WriteThread"]
