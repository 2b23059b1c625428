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


def _pid_space() -> str:
    """This process's pid namespace (Linux: the inode of ``/proc/self/ns/pid``), so that
    a pid is only ever compared with pids of the same namespace; "" where unknown."""
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return ""


PID_SPACE = _pid_space()
#: the replica ids this process made (tests run several replicas in one process)
_MADE_HERE: set[str] = set()


def new_replica_id() -> str:
    """A replica's id, new at each start: ``host:pid:random``, the pid written ``pid@ns``
    with its pid namespace where known (a restarted process with a reused pid is another
    replica)."""
    pid = f"{os.getpid()}@{PID_SPACE}" if PID_SPACE else str(os.getpid())
    made = f"{socket.gethostname()}:{pid}:{secrets.token_hex(3)}"
    _MADE_HERE.add(made)
    return made


def gone_here(replica: str) -> bool:
    """Whether ``replica`` was a gateway of this host and pid namespace whose process is
    gone (killed with SIGKILL and started again, say): its leases and local tasks need not
    wait out ``lease_s`` for its heartbeat to age. Only the same host and namespace are
    judged (a pid means nothing elsewhere); a pid that is alive, even reused by another
    program, counts as alive."""
    host, _, rest = replica.partition(":")
    pid_part, _, _ = rest.partition(":")
    pid_text, _, space = pid_part.partition("@")
    if host != socket.gethostname() or not PID_SPACE or space != PID_SPACE:
        return False
    if not pid_text.isdigit():
        return False
    if int(pid_text) == os.getpid():  # this pid in another id: an earlier start's, unless
        return replica not in _MADE_HERE  # this process made it (several in one process)
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


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
