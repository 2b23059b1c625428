"""The PostgreSQL store (``storage.url: postgresql://...``): the dialect's half of `egw.store`.

``conn.py`` connects and holds the advisory locks, ``migrate.py`` applies
``migrations/postgresql/``, ``writes.py`` is the writer's half (its docstring: the
ordering readers can trust), ``reads.py`` the queries, ``copy.py`` the copy of a SQLite
database (``egw migrate --from sqlite:///... --to postgresql://...``). asyncpg is
imported here only (``tests/test_layers.py``).
"""

from __future__ import annotations

from typing import Any

from egw.errors import ConfigError
from egw.store.postgres.conn import connect, create_pool
from egw.store.postgres.migrate import apply_migrations, current_version, pg_migrations
from egw.store.postgres.reads import PgReader
from egw.store.postgres.writes import PgWrites


class PgParts:
    """The write connection (`PgWrites`, holding the instance lock) and the readers' pool."""

    def __init__(self, url: str, pool_size: int) -> None:
        self.url = url
        self.pool_size = pool_size
        self.writes = PgWrites(url)
        self.pool: Any = None
        self.reader: PgReader

    async def open(self, *, auto_migrate: bool) -> None:
        await self.writes.open()  # first: a second gateway is refused before it migrates
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

    async def close(self) -> None:
        try:
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
