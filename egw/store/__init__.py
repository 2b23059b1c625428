"""The SQLite event log: the only package that talks to the database.

`Store` opens it, holding the database's lock (``lock.py``: one process per
database); its `Writer` (``writer.py``) makes every change, in batches,
and keeps the projection cache; its `Reader` (``reads.py``) answers queries on
a second, read-only connection.
"""

from __future__ import annotations

import sqlite3

import aiosqlite

from egw.core.model import Task
from egw.errors import ConfigError, StoreError
from egw.store.db import connect, probe_write
from egw.store.lock import DatabaseLock
from egw.store.migrate import apply_migrations, current_version, load_migrations
from egw.store.ops import Accept, retention_cutoff
from egw.store.reads import Reader
from egw.store.upstreams import UpstreamIndex
from egw.store.writer import Writer


class Store:
    """One write connection (owned by the `Writer`) and one read-only connection (the `Reader`)."""

    def __init__(self, path: str, *, cache_size: int = 10000) -> None:
        self.path = path
        self._cache_size = cache_size
        self._wconn: aiosqlite.Connection | None = None
        self._rconn: aiosqlite.Connection | None = None
        self._lock = DatabaseLock(path)
        #: upstream id -> task id of the providers that asked (`egw.store.upstreams`)
        self.upstreams = UpstreamIndex()
        self.writer: Writer
        self.reader: Reader

    async def open(self, *, auto_migrate: bool = True) -> None:
        """Lock, connect, migrate (or check the schema) and prove a write is possible, before
        anyone relies on the store; raises `StoreError` or `ConfigError` with one line."""
        self._lock.acquire()
        try:
            await self._open(auto_migrate)
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StoreError(f"{self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    async def _open(self, auto_migrate: bool) -> None:
        self._wconn = await connect(self.path)
        if auto_migrate:
            await apply_migrations(self._wconn)
        else:
            have, want = await current_version(self._wconn), len(load_migrations())
            if have != want:
                raise ConfigError(
                    "storage.path", f"schema version {have}, expected {want}: run `egw migrate`"
                )
        await probe_write(self._wconn)
        self._rconn = await connect(self.path, readonly=True)
        self.writer = Writer(self._wconn, cache_size=self._cache_size)
        self.writer.listeners.append(self.upstreams.on_commit)
        self.reader = Reader(self._rconn)
        await self.writer.start()

    async def close(self) -> None:
        """Stop the writer, close both connections (each one even if another step fails:
        an open aiosqlite connection is a thread that keeps the process alive), unlock."""
        try:
            if getattr(self, "writer", None) is not None:
                await self.writer.close()
        finally:
            try:
                for conn in (self._rconn, self._wconn):
                    if conn is not None:
                        await _close_quietly(conn)
            finally:
                self._rconn = self._wconn = None
                self._lock.release()

    async def watch_upstreams(self, provider: str) -> None:
        """Answer `egw.store.upstreams.UpstreamIndex` lookups for ``provider`` from now on."""
        assert self._rconn is not None, "the store is not open"
        await self.upstreams.watch(self._rconn, provider)

    async def find_upstream(self, provider: str, upstream_id: str) -> Task | None:
        """The task holding an upstream id (the latest submitted). For a watched provider
        (`watch_upstreams`: the webhook providers, most of whose deliveries are not egw's)
        the index answers without a database read (bench part "webhooks")."""
        index = self.upstreams
        if index.watches(provider):
            task_id = index.get(provider, upstream_id)
            if task_id is None:
                return None
            task = self.writer.cached(task_id) or await self.reader.task(task_id)
            # as the query below: a task holds only its current upstream id (a resubmitted
            # task's replaced run is no longer its own)
            return task if task is not None and task.upstream_id == upstream_id else None
        found = await self.reader.task_by_upstream(provider, upstream_id)
        return self.writer.cached(found.id) or found if found else None

    async def writable(self) -> bool:
        """For /readyz: the read connection answers a query and the writer's loop is running.

        (It tries no write: the write connection belongs to the writer's loop.)
        """
        if self._wconn is None or self._rconn is None:
            return False
        try:
            async with self._rconn.execute("SELECT 1") as cur:
                await cur.fetchone()
        except Exception:  # noqa: BLE001 - whatever the failure, the store is not ready
            return False
        return self.writer.running


async def _close_quietly(conn: aiosqlite.Connection) -> None:
    try:
        await conn.close()
    except sqlite3.Error:
        pass  # its thread has stopped all the same; there is nothing left to write


__all__ = ["Accept", "DatabaseLock", "Reader", "Store", "Writer", "retention_cutoff"]
