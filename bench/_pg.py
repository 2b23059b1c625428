"""PostgreSQL for the benchmark's writer part: a fresh database per run, dropped after.

The server is ``$EGW_BENCH_PG_URL`` (default: the local one, as the tests use); where
none answers, the PostgreSQL row of the writer part says so and the part goes on.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from urllib.parse import urlsplit, urlunsplit

ADMIN_URL = os.environ.get("EGW_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_URL, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def unavailable() -> str | None:
    """Why the PostgreSQL row cannot run (None: it can)."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means: no server to measure
        return f"no PostgreSQL at {ADMIN_URL}: {exc}"
    return None


def create() -> str:
    name = f"egw_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(f"CREATE DATABASE {name}"))
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def drop(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
