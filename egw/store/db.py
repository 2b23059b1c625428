"""Open the SQLite database: one write connection (plain sqlite3, on the writer's own
thread: ``sqlite_writes.py``), one read connection (aiosqlite), WAL mode.

Every opening of a database for writing holds its lock (``lock.py``) first.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path

import aiosqlite

from egw.errors import ConfigError, StoreError
from egw.store.backend import dialect, sqlite_path
from egw.store.lock import DatabaseLock
from egw.store.migrate import apply_migrations
from egw.store.sqlite_writes import WriteThread


def pragmas(*, readonly: bool) -> list[str]:
    """What every connection is set to (the write connection: ``readonly`` False)."""
    return [
        "PRAGMA busy_timeout = 5000",
        *([] if readonly else ["PRAGMA journal_mode = WAL"]),
        # NORMAL in WAL mode: a commit survives a crash of egw (not of the OS); see
        # https://www.sqlite.org/pragma.html#pragma_synchronous
        "PRAGMA synchronous = NORMAL",
        "PRAGMA foreign_keys = ON",
        *(["PRAGMA query_only = ON"] if readonly else []),
    ]


async def connect(path: str, *, readonly: bool = False) -> aiosqlite.Connection:
    """An aiosqlite connection: the reader's (``readonly``), or a bench's."""
    if path != ":memory:" and not readonly:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        for pragma in pragmas(readonly=readonly):
            await conn.execute(pragma)
    except BaseException:
        await conn.close()
        raise
    return conn


def open_writer(path: str) -> sqlite3.Connection:
    """The write connection, opened on the thread that will use it (`WriteThread.open`)."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level None: no implicit BEGIN, the writer's statements say when
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in pragmas(readonly=False):
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


async def connect_writer(path: str) -> WriteThread:
    """The write connection on its own thread (``sqlite_writes.py``)."""
    thread = WriteThread()
    try:
        await thread.open(functools.partial(open_writer, path))
    except BaseException:
        await thread.close()
        raise
    return thread


def probe_write(conn: sqlite3.Connection) -> None:
    """Fail now, with SQLite's reason, if the database cannot take a write.

    A database SQLite had to open read-only (an immutable file, a read-only mount, a
    file its user may not write) answers every read; it refuses only the first write,
    which, left to the running gateway, would be a provider's start-up report of an
    unfinished task. So write the header's ``user_version`` (to its own value) in a
    transaction that is rolled back: nothing reaches the disk.
    """
    row = conn.execute("PRAGMA user_version").fetchone()
    version = int(row[0]) if row else 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.execute("ROLLBACK")


async def open_and_migrate(path: str) -> list[str]:
    """`egw migrate`: apply missing migrations to the file at ``path``, holding its lock (a
    running gateway has it: the migration is refused, with one line naming that gateway)."""
    with DatabaseLock(path):
        try:
            thread = await connect_writer(path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: {exc}") from exc
        try:
            return await thread.run(apply_migrations)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from exc
        finally:
            await thread.close()


async def migrate_address(address: str) -> list[str]:
    """`egw migrate` on ``storage.url`` or ``storage.path``: SQLite or PostgreSQL."""
    if dialect(address) == "postgresql":
        from egw.store.postgres import migrate  # asyncpg only for PostgreSQL

        return await migrate(address)
    return await open_and_migrate(sqlite_path(address))


async def copy_database(source: str, target: str) -> dict[str, int]:
    """`egw migrate --from sqlite:///... --to postgresql://...`: rows copied per table."""
    if dialect(source) != "sqlite" or dialect(target) != "postgresql":
        raise ConfigError("--from", "copies a SQLite database (--from) to PostgreSQL (--to)")
    from egw.store.postgres.copy import copy_sqlite

    return await copy_sqlite(source, target)
