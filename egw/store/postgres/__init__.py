"""The PostgreSQL store (``storage.url: postgresql://...``): the dialect's half of `egw.store`.

``conn.py`` connects and names the advisory locks, ``feed.py`` shows here what
other replicas on the database commit (and beats this replica's heartbeat), ``migrate.py`` applies
``migrations/postgresql/``, ``writes.py`` is the writer's half (its docstring: the
ordering readers can trust), ``reads.py`` the queries, ``copy.py`` the copy of a SQLite
database (``egw migrate --from sqlite:///... --to postgresql://...``). asyncpg is
imported here only (``tests/test_layers.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from egw.core.records import Commit
from egw.errors import ConfigError
from egw.store.postgres.conn import connect, create_pool, gone_here
from egw.store.postgres.feed import PgFeed
from egw.store.postgres.leases import PgLeaseTable
from egw.store.postgres.migrate import apply_migrations, current_version, pg_migrations
from egw.store.postgres.reads import PgReader
from egw.store.postgres.writes import PgWrites


class PgParts:
    """The write connection (`PgWrites`), the readers' pool and the feed of the other
    replicas (`PgFeed`, started by `feed_to` once the writer runs)."""

    def __init__(self, url: str, pool_size: int) -> None:
        self.url = url
        self.pool_size = pool_size
        self.writes = PgWrites(url)
        self.pool: Any = None
        self.reader: PgReader
        self.feed: PgFeed | None = None
        self.live_s = 15.0

    async def feed_to(
        self,
        emit: Callable[[Commit], None],
        forget: Callable[[list[str]], None],
        lease_s: float,
    ) -> None:
        """Show here what other replicas commit: ``emit`` each batch of theirs, after
        ``forget`` of the tasks it changed (``feed.py``); beat the heartbeat every fifth
        of ``lease_s``."""
        self.live_s = lease_s
        self.feed = PgFeed(self.url, self.writes.replica, emit, forget, heartbeat_s=lease_s / 5)
        await self.feed.start()

    async def open(self, *, auto_migrate: bool) -> None:
        await self.writes.open()
        conn = self.writes.conn
        if auto_migrate:
            await apply_migrations(conn)
        else:
            have, want = await current_version(conn), len(pg_migrations())
            if have != want:
                raise ConfigError(
                    "storage.url", f"schema version {have}, expected {want}: run `egw migrate`"
                )
        await self.writes.probe()
        self.pool = await create_pool(self.url, self.pool_size)
        self.reader = PgReader(self.pool)

    def lease_table(self) -> PgLeaseTable:
        """This replica's rows of ``leases`` (``leases.py``)."""
        return PgLeaseTable(self.pool, self.writes.replica)

    async def live_replicas(self) -> set[str]:
        """Replicas whose heartbeat is younger than ``storage.lease_s``."""
        rows = await self.pool.fetch(
            "SELECT id FROM replicas WHERE heartbeat_at > now() - make_interval(secs => $1)",
            self.live_s,
        )
        # a replica of this host whose process is gone is not waited for (conn.gone_here)
        return {str(r[0]) for r in rows if not gone_here(str(r[0]))}

    async def close(self) -> None:
        try:
            if self.feed is not None:
                await self.feed.close()
                self.feed = None
            if self.pool is not None:
                await self.pool.close()
                self.pool = None
        finally:
            await self.writes.close()


async def migrate(url: str) -> list[str]:
    """`egw migrate` on PostgreSQL: apply what is missing (under the migration lock: a
    running gateway does not stop it; a gateway applies the same migrations at start)."""
    conn = await connect(url)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


__all__ = ["PgParts", "migrate"]
