"""Open the SQLite database: one write connection, one read connection, WAL mode."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from egw.store.migrate import apply_migrations


async def connect(path: str, *, readonly: bool = False) -> aiosqlite.Connection:
    if path != ":memory:" and not readonly:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            await conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a crash of egw (not of the OS); see
        # https://www.sqlite.org/pragma.html#pragma_synchronous
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            await conn.execute("PRAGMA query_only = ON")
    except BaseException:
        await conn.close()
        raise
    return conn


async def open_and_migrate(path: str) -> list[str]:
    """`egw migrate`: apply missing migrations to the file at ``path``."""
    conn = await connect(path)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()
