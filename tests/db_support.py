"""The databases of the tests: SQLite files, and fresh PostgreSQL databases.

PostgreSQL is the server at ``$EGW_TEST_PG_URL`` (default: the local server,
``postgresql://postgres@127.0.0.1:5432/postgres``; CI runs one). Each test module
that asks gets its own database, ``egw_t_<random>``, dropped when the run ends; each
test of it starts from empty tables (`clean`). Where no server answers, the
PostgreSQL half of a parametrised test is skipped, saying so (`skip_reason`).

``EGW_TEST_STORE=postgresql`` runs the gateway of the whole suite on PostgreSQL:
`store_url` gives each test's configuration a database of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import os
import secrets
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

T = TypeVar("T")

ADMIN_URL = os.environ.get("EGW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
#: "postgresql": the gateway fixtures and `egw serve` of the tests use PostgreSQL
STORE = os.environ.get("EGW_TEST_STORE", "sqlite")

_created: list[str] = []
_by_folder: dict[Path, str] = {}


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end from anywhere, inside a running event loop too (on a thread
    of its own then)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def url_of(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


@functools.cache
def skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here (None: they can)."""

    async def probe() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=3)
        await conn.close()

    try:
        run(probe())
    except Exception as exc:  # noqa: BLE001 - whatever it is, there is no server to test on
        return f"no PostgreSQL server answers at {ADMIN_URL} (set EGW_TEST_PG_URL): {exc}"
    return None


def create_database() -> str:
    """A new, empty database; its URL. Dropped when the test run ends."""
    name = f"egw_t_{secrets.token_hex(6)}"

    async def create() -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()

    run(create())
    _created.append(name)
    return url_of(name)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")

    async def drop() -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()

    run(drop())
    if name in _created:
        _created.remove(name)


@atexit.register
def _drop_all() -> None:
    for name in list(_created):
        try:
            drop_database(url_of(name))
        except Exception:  # noqa: BLE001 - a server gone at exit: nothing left to clean
            pass


def clean(url: str) -> None:
    """Empty every table of egw's (as a fresh migration leaves them)."""

    async def truncate() -> None:
        conn = await asyncpg.connect(url)
        try:
            tables = [
                r[0]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                    " AND tablename <> 'egw_migrations'"
                )
            ]
            if tables:
                await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
            if "pruned" in tables:
                await conn.execute("INSERT INTO pruned (id, pruned_seq) VALUES (1, 0)")
        finally:
            await conn.close()

    run(truncate())


def drop_new(before: set[str]) -> None:
    """Drop the gateways' databases made since ``before`` (`created`), with their test."""
    for folder, url in list(_by_folder.items()):
        if urlsplit(url).path.lstrip("/") not in before:
            del _by_folder[folder]
            drop_database(url)


def created() -> set[str]:
    return set(_created)


def store_url(folder: Path) -> str:
    """The database of the test whose files are in ``folder``: under
    ``EGW_TEST_STORE=postgresql`` a database of its own, else the SQLite file there."""
    if STORE != "postgresql":
        return str(folder / "egw.db")
    if folder not in _by_folder:
        reason = skip_reason()
        if reason is not None:
            raise RuntimeError(f"EGW_TEST_STORE=postgresql: {reason}")
        _by_folder[folder] = create_database()
    return _by_folder[folder]


async def execute_many(address: str, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Rows written behind the store's back (``?`` placeholders, as SQLite's)."""
    if address.startswith("postgresql://"):
        n = sql.count("?")
        for i in range(1, n + 1):
            sql = sql.replace("?", f"${i}", 1)
        conn = await asyncpg.connect(address)
        try:
            await conn.executemany(sql, rows)
        finally:
            await conn.close()
        return
    import sqlite3

    def write() -> None:
        with sqlite3.connect(address) as raw:
            raw.executemany(sql, rows)

    # in a thread: the store's writer may be inside a transaction that needs this loop to
    # finish, and a blocking connect here would wait out its busy timeout instead
    await asyncio.to_thread(write)
