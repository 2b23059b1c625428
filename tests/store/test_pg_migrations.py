"""PostgreSQL's migrations: twins of SQLite's, applied once when gateways start together."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from egw.errors import ConfigError
from egw.store import Store
from egw.store.migrate import load_migrations, migrations_dir
from egw.store.postgres.migrate import apply_migrations, current_version, pg_migrations


def test_each_sqlite_migration_has_its_postgresql_twin() -> None:
    """No migration lands in one dialect only: the same numbers and names in both."""
    sqlite = [m.name for m in load_migrations()]
    postgresql = [m.name for m in pg_migrations()]
    assert sqlite == postgresql and len(sqlite) >= 5
    assert (migrations_dir() / "postgresql").is_dir()


async def test_concurrent_migrations_of_a_fresh_database_apply_each_once(pg_url: str) -> None:
    conns = [await asyncpg.connect(pg_url) for _ in range(5)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
        names = [m.name for m in pg_migrations()]
        assert sorted(results, key=len) == [[], [], [], [], names]
        assert await current_version(conns[0]) == len(names)
        rows = await conns[0].fetch("SELECT version FROM egw_migrations ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, len(names) + 1))
        assert await apply_migrations(conns[1]) == []  # again: nothing left to do
    finally:
        for c in conns:
            await c.close()


async def test_gateways_starting_together_migrate_once(pg_database: str) -> None:
    """Stores opened at once on a fresh database (replicas): one migrates, the others find
    it done, and all of them open."""
    conn = await asyncpg.connect(pg_database)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    stores = [Store(pg_database) for _ in range(4)]
    results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
    opened = [s for s, r in zip(stores, results, strict=True) if r is None]
    try:
        assert len(opened) == 4, results
        assert await opened[0].reader.max_seq() == 0
    finally:
        for s in opened:
            await s.close()


async def test_a_store_that_may_not_migrate_names_the_versions(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("DELETE FROM egw_migrations WHERE version = 6")
    finally:
        await conn.close()
    try:
        store = Store(pg_url)
        with pytest.raises(ConfigError, match="schema version 5, expected 6"):
            await store.open(auto_migrate=False)
    finally:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(
                "INSERT INTO egw_migrations (version, name) VALUES (6, '0006_replicas.sql')"
            )
        finally:
            await conn.close()


def test_the_postgresql_files_are_numbered_like_sqlites(tmp_path: Path) -> None:
    (tmp_path / "0002_gap.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigError, match="without gaps"):
        pg_migrations(tmp_path)
