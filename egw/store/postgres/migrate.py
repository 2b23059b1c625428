"""PostgreSQL's migrations: ``migrations/postgresql/NNNN_name.sql``, twins of SQLite's.

Each number has a file in both dialects (``tests/store/test_pg_migrations.py`` checks
it). The version is a table, ``egw_migrations`` (SQLite uses ``PRAGMA user_version``);
the whole run holds the advisory lock `MIGRATE_KEY`, so gateways (and ``egw migrate``)
starting together on a fresh database apply each migration once: the others wait for
the lock, then find nothing left to do. Each file and its version row are one
transaction (PostgreSQL's DDL is transactional).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from egw.errors import ConfigError
from egw.store.migrate import Migration, load_migrations, migrations_dir
from egw.store.postgres.conn import MIGRATE_KEY

log = structlog.get_logger("egw.store")

VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS egw_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())"
)


def pg_migrations(folder: Path | None = None) -> list[Migration]:
    return load_migrations(folder or migrations_dir() / "postgresql")


async def current_version(conn: Any) -> int:
    exists = await conn.fetchval("SELECT to_regclass('egw_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM egw_migrations"))


async def apply_migrations(conn: Any, folder: Path | None = None) -> list[str]:
    """Apply what is missing, under `MIGRATE_KEY`; returns the names applied (here)."""
    known = pg_migrations(folder)
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_KEY)
    try:
        await conn.execute(VERSION_TABLE)
        version = await current_version(conn)
        if version > len(known):
            raise ConfigError(
                "storage.url",
                f"the database is at schema version {version}, "
                f"newer than this egw knows ({len(known)})",
            )
        for m in known[version:]:
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO egw_migrations (version, name) VALUES ($1, $2)", m.version, m.name
                )
            applied.append(m.name)
            log.info("migration_applied", migration=m.name, dialect="postgresql")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_KEY)
    return applied
