"""Connecting to PostgreSQL, the advisory-lock keys, the feed's channel, replica ids.

Advisory locks are scoped to the database, so these keys never meet another
database's; they are constants so that every gateway (and `egw migrate`) on one
database agrees on them.

- `LOG_KEY`: taken by each batch's transaction (``pg_advisory_xact_lock``) before it
  numbers its events: the order of commits is the order of ``seq`` (``writes.py``).
- `MIGRATE_KEY`: held while migrations are applied, so that gateways starting together
  migrate once (``migrate.py``).
- `INSTANCE_KEY`: held by ``egw migrate --from sqlite:///...`` while it copies, so that
  two copies into one database refuse each other. Gateways do not take it: replicas
  share one database (the feed, ``feed.py``; the leases, ``leases.py``).
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

import asyncpg

from egw.errors import StoreError
from egw.store.backend import redact

#: ``b"egw" * 8`` would do as well: any constant all gateways share. One per purpose.
LOG_KEY = 0x65677701
MIGRATE_KEY = 0x65677702
INSTANCE_KEY = 0x65677703

#: the channel of ``NOTIFY`` after each commit that changed something (payload: a hint)
CHANNEL = "egw_log"

#: how a gateway's connections are named in ``pg_stat_activity``: the refused one is told
APP_NAME = f"egw pid {os.getpid()} on {socket.gethostname()}"[:63]


#: the writer waits this long for the log's lock (another writer's batch) before the batch
#: counts as refused by the store, and is tried again (``writer.py``)
LOCK_TIMEOUT = "5s"


def new_replica_id() -> str:
    """A replica's id, new at each start: ``host:pid:random`` (a restarted process with a
    reused pid is another replica)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def connect(url: str, **settings: str) -> Any:
    """One connection (an ``asyncpg.Connection``) with these server settings; `StoreError`
    with the redacted address."""
    try:
        return await asyncpg.connect(
            url, server_settings={"application_name": APP_NAME, **settings}
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"{redact(url)}: {exc}") from exc


async def create_pool(url: str, size: int) -> Any:
    """The readers' pool (an ``asyncpg.Pool``)."""
    try:
        return await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=size,
            server_settings={"application_name": APP_NAME},
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"{redact(url)}: {exc}") from exc


async def claim(conn: Any, url: str) -> None:
    """Take `INSTANCE_KEY` on ``conn`` for the connection's life, or refuse with one line
    naming the holder (its ``application_name``: pid and host)."""
    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", INSTANCE_KEY):
        return
    holder = await conn.fetchval(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database"
        "  WHERE datname = current_database())"
        " AND l.classid = $1 AND l.objid = $2 AND l.granted LIMIT 1",
        INSTANCE_KEY >> 32,
        INSTANCE_KEY & 0xFFFFFFFF,
    )
    who = holder or "another process"
    raise StoreError(f"{redact(url)} is in use by another copy ({who}): one copy at a time")
