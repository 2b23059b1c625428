"""The event log: the only package that talks to the database, SQLite or PostgreSQL.

`Store` opens it, holding the database's lock on SQLite (one process per database: the
``flock`` of ``lock.py``; PostgreSQL is shared by replicas, each shown the others'
commits by its feed, ``postgres/feed.py``); its `Writer`
(``writer.py``) makes every change, in batches, and keeps the projection cache; its
reader (`Reads`: ``reads.py``, ``postgres/reads.py``) answers queries on a second,
read-only connection (a pool on PostgreSQL). ``backend.py`` is the seam between the
shared logic and each dialect.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite
import structlog

from egw.core.model import Task
from egw.core.records import Commit
from egw.errors import ConfigError, EgwError, StoreError
from egw.store.backend import Reads, dialect, redact, sqlite_path
from egw.store.db import connect, connect_writer, probe_write
from egw.store.leases import Leases, Replication
from egw.store.lock import DatabaseLock
from egw.store.migrate import apply_migrations, current_version, load_migrations
from egw.store.ops import Accept, retention_cutoff
from egw.store.reads import Reader
from egw.store.sqlite_writes import SqliteWrites, WriteThread
from egw.store.upstreams import UpstreamIndex
from egw.store.writer import Writer

log = structlog.get_logger("egw.store")


class Store:
    """One write connection (owned by the `Writer`) and one read-only connection (the
    reader; a pool of ``pool_size`` on PostgreSQL).

    ``address`` is a SQLite file (``path``, or ``sqlite:///path``) or a
    ``postgresql://`` URL (`egw.store.backend.dialect`)."""

    def __init__(
        self, address: str, *, cache_size: int = 10000, pool_size: int = 4, lease_s: float = 15.0
    ) -> None:
        self.dialect = dialect(address)
        self._address = address
        #: the SQLite file, or the URL with its password hidden (logs, ``/readyz``)
        self.path = sqlite_path(address) if self.dialect == "sqlite" else redact(address)
        self._cache_size = cache_size
        self._pool_size = pool_size
        #: SQLite's write connection, on the writer's own thread (``sqlite_writes.py``)
        self._wthread: WriteThread | None = None
        self._rconn: aiosqlite.Connection | None = None
        self._pg: Any = None
        self._lock = DatabaseLock(self.path if self.dialect == "sqlite" else ":memory:")
        #: upstream id -> task id of the providers that asked (`egw.store.upstreams`)
        self.upstreams = UpstreamIndex()
        self.writer: Writer
        self.reader: Reads
        #: the singleton work this gateway may do now (`egw.store.leases`): all on SQLite
        self.leases = Leases()
        self._lease_s = lease_s

    async def open(self, *, auto_migrate: bool = True) -> None:
        """Lock, connect, migrate (or check the schema) and prove a write is possible, before
        anyone relies on the store; raises `StoreError` or `ConfigError` with one line."""
        self._lock.acquire()
        log.info("store_opening", store=self.dialect, location=self.path)
        try:
            if self.dialect == "postgresql":
                await self._open_postgres(auto_migrate)
            else:
                await self._open(auto_migrate)
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StoreError(f"{self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    async def _open(self, auto_migrate: bool) -> None:
        self._wthread = thread = await connect_writer(self.path)
        if auto_migrate:
            await thread.run(apply_migrations)
        else:
            have, want = await thread.run(current_version), len(load_migrations())
            if have != want:
                raise ConfigError(
                    "storage.path", f"schema version {have}, expected {want}: run `egw migrate`"
                )
        await thread.run(probe_write)
        self._rconn = await connect(self.path, readonly=True)
        self.writer = Writer(SqliteWrites(thread), cache_size=self._cache_size)
        self.writer.listeners.append(self.upstreams.on_commit)
        self.reader = Reader(self._rconn)
        await self.writer.start()

    async def _open_postgres(self, auto_migrate: bool) -> None:
        from egw.store.postgres import PgParts  # asyncpg is loaded only for a PostgreSQL store

        self._pg = PgParts(self._address, self._pool_size)
        try:
            await self._pg.open(auto_migrate=auto_migrate)
        except EgwError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        self.writer = Writer(self._pg.writes, cache_size=self._cache_size)
        self.writer.listeners.append(self.upstreams.on_commit)
        self.reader = self._pg.reader
        await self.writer.start()
        await self._pg.feed_to(self._replicated, self.writer.forget, self._lease_s)
        self.writer.listeners.append(self._pg.feed.own)
        self.leases = Leases(self._pg.lease_table(), self._lease_s)
        await self.leases.start()

    def fan_out(self, listener: Callable[[Commit], None]) -> None:
        """Be told of every commit in commit order, each once: this gateway's on SQLite;
        on PostgreSQL every replica's, through the feed (``postgres/feed.py``)."""
        if self._pg is not None and self._pg.feed is not None:
            self._pg.feed.ordered.append(listener)
        else:
            self.writer.listeners.append(listener)

    def _replicated(self, commit: Commit) -> None:
        """Another replica's commit (PostgreSQL): to the writer's listeners, as its own."""
        for listener in self.writer.listeners:
            try:
                listener(commit)
            except Exception as exc:  # noqa: BLE001 - a listener must not break the feed
                log.error("commit_listener_failed", error=repr(exc))

    async def close(self) -> None:
        """Stop the writer, close both connections (each one even if another step fails:
        an open aiosqlite connection is a thread that keeps the process alive), then the
        write connection's thread, unlock."""
        try:
            await self.leases.close()
            if getattr(self, "writer", None) is not None:
                await self.writer.close()
        finally:
            try:
                if self._rconn is not None:
                    await _close_quietly(self._rconn)
                if self._wthread is not None:
                    await _close_quietly(self._wthread)
                if self._pg is not None:
                    await self._pg.close()
            finally:
                self._rconn = self._wthread = None
                self._pg = None
                self._lock.release()

    @property
    def replica(self) -> str | None:
        """This gateway's replica id on PostgreSQL (``host:pid:random``); None on SQLite."""
        return self._pg.writes.replica if self._pg is not None else None

    async def live_replicas(self) -> set[str]:
        """The replicas whose heartbeat is recent (PostgreSQL; empty on SQLite)."""
        return await self._pg.live_replicas() if self._pg is not None else set()

    async def replication(self) -> Replication | None:
        """This replica, its leases and the replicas it sees (PostgreSQL; None on SQLite)."""
        pg = self._pg
        if pg is None or pg.feed is None:
            return None
        return Replication(
            replica=pg.writes.replica,
            leases=self.leases.holding,
            holders=await pg.lease_table().holders(),
            failovers=self.leases.failovers,
            seen=sorted(await pg.live_replicas()),
            feed_lag_s=pg.feed.lag_s,
            feed_reconnects=pg.feed.reconnects,
        )

    def on_feed_lag(self, hear: Callable[[float], None]) -> None:
        """Be told each lag of the feed of replicas (PostgreSQL; never on SQLite)."""
        if self._pg is not None and self._pg.feed is not None:
            self._pg.feed.on_lag = hear

    async def watch_upstreams(self, provider: str) -> None:
        """Answer `egw.store.upstreams.UpstreamIndex` lookups for ``provider`` from now on."""
        await self.upstreams.watch(self.reader, provider)

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
        if getattr(self, "reader", None) is None or (self._pg is None and self._rconn is None):
            return False
        try:
            await self.reader.ping()
        except Exception:  # noqa: BLE001 - whatever the failure, the store is not ready
            return False
        return self.writer.running


async def _close_quietly(conn: aiosqlite.Connection | WriteThread) -> None:
    try:
        await conn.close()
    except sqlite3.Error:
        pass  # its thread has stopped all the same; there is nothing left to write


__all__ = ["Accept", "DatabaseLock", "Reader", "Reads", "Store", "Writer", "retention_cutoff"]
