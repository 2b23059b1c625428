"""`Database`: the event log as the composition root holds it, so that egw.web never
touches the store: opened and closed here, read through `TaskReads`, written
through `TaskService`, watched through its commit listeners."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from egw.config import StorageConfig
from egw.core.records import Commit
from egw.providers.base import Provider
from egw.service.fanout import Hub
from egw.service.gateway import GatewayLog
from egw.service.reads import TaskReads
from egw.service.tasks import TaskService
from egw.store import DatabaseLock, Store
from egw.store.backend import dialect, sqlite_path


def claim(address: str) -> DatabaseLock:
    """The database's exclusive lock (one process per database), for a process that must
    own it before it does anything else: `egw serve` takes it before binding its port or
    opening anything. Use it as a context manager; `Database.open` takes it again (it is
    counted within a process) and refuses a database another process holds.

    For PostgreSQL there is nothing to lock: replicas share the database (the feed and
    the leases, ``egw/store/postgres/``), so this one locks nothing."""
    if dialect(address) == "postgresql":
        return DatabaseLock(":memory:")  # (locks nothing: see above)
    return DatabaseLock(sqlite_path(address))


class Database:
    """One gateway's database: the `Store` (a write and a read connection) and what
    the layers above may do with it."""

    def __init__(self, cfg: StorageConfig) -> None:
        self._cfg = cfg
        self._store = Store(
            cfg.address, cache_size=cfg.cache_size, pool_size=cfg.pool_size, lease_s=cfg.lease_s
        )
        self._reads: TaskReads | None = None

    async def open(self) -> None:
        """Lock the file, open it, apply pending migrations and check that it can be written;
        raises `StoreError` (or `ConfigError`) with one line if it can't."""
        await self._store.open()
        self._reads = TaskReads(self._store.reader, self._store.writer)

    async def close(self) -> None:
        await self._store.close()

    @property
    def reads(self) -> TaskReads:
        if self._reads is None:
            raise RuntimeError("the database is not open")
        return self._reads

    def listen(
        self,
        on_commit: Callable[[Commit], None],
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Be told of every committed batch (its changes, and its size in operations)."""
        self._store.writer.listeners.append(on_commit)
        if on_batch is not None:
            self._store.writer.batch_listeners.append(on_batch)

    def on_feed_lag(self, hear: Callable[[float], None]) -> None:
        """Be told how long each other replica's commit took to reach this one (seconds;
        PostgreSQL replicas only)."""
        self._store.on_feed_lag(hear)

    async def replication(self) -> Mapping[str, Any] | None:
        """This replica, its leases and the replicas it sees, for ``/readyz`` and the
        metrics (PostgreSQL; None on SQLite)."""
        state = await self._store.replication()
        return state.to_json() if state is not None else None

    async def writable(self) -> bool:
        """For ``/readyz``: the connections answer and the writer's loop runs."""
        return await self._store.writable()

    def gateway_log(self) -> GatewayLog:
        """The gateway's own events (circuit breakers' moves) in this database."""
        return GatewayLog(self._store)

    def task_service(self, providers: Mapping[str, Provider], hub: Hub) -> TaskService:
        """The use cases over this database, reporting commits to ``hub``."""
        return TaskService(
            self._store,
            providers,
            hub,
            reads=self.reads,
            retention_days=self._cfg.retention_days,
            prune_interval_s=self._cfg.prune_interval_s,
        )
