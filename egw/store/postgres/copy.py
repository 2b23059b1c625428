"""``egw migrate --from sqlite:///... --to postgresql://...``: a SQLite database, copied.

Every table the SQLite file has (but its bookkeeping: ``sqlite_*``) is copied into the
table of the same name, column by column by name, with binary ``COPY`` in batches of
`BATCH` rows, in one PostgreSQL transaction: a copy that fails leaves the target as it
was. Both sides must be at the same schema version (the target is migrated first; the
source must be up to date: ``egw migrate`` on it). The target must be empty (no task,
event, output, key, cursor or gateway event; ``pruned`` as a fresh migration leaves it),
and each table's row count is compared before COMMIT. Both databases are locked as a
gateway locks them (the source's ``flock``, the target's instance lock): neither may
be in use while it is copied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from egw.errors import ConfigError, StoreError
from egw.store.backend import redact, sqlite_path
from egw.store.lock import DatabaseLock
from egw.store.migrate import load_migrations
from egw.store.postgres.conn import claim, connect
from egw.store.postgres.migrate import apply_migrations

BATCH = 5000
#: the target must hold nothing of these (``pruned`` is checked apart: one row, 0)
_EMPTY = ("tasks", "events", "log_chunks", "idempotency_keys", "cursors", "gateway_events")


async def copy_sqlite(source: str, target: str) -> dict[str, int]:
    """Copy the SQLite database at ``source`` into the PostgreSQL database ``target``;
    returns the rows copied per table. Raises `StoreError` (one line) if it cannot."""
    path = sqlite_path(source)
    if not Path(path).is_file():
        raise StoreError(f"{path}: no such SQLite database")
    try:
        return await _locked(path, target)
    except (sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"{path} -> {redact(target)}: {exc}") from exc


async def _locked(path: str, target: str) -> dict[str, int]:
    with DatabaseLock(path):
        src = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
        try:
            want = len(load_migrations())
            (row,) = await src.execute_fetchall("PRAGMA user_version")
            have = int(row[0])
            if have != want:
                raise ConfigError(
                    "--from", f"{path} is at schema version {have}, not {want}: egw migrate it"
                )
            dst = await connect(target)
            try:
                await claim(dst, target)
                await apply_migrations(dst)
                return await _copy(src, dst, path, redact(target))
            finally:
                await dst.close()
        finally:
            await src.close()


async def _copy(src: aiosqlite.Connection, dst: Any, path: str, where: str) -> dict[str, int]:
    async with src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    ) as cur:
        tables = [str(r[0]) for r in await cur.fetchall()]
    counts: dict[str, int] = {}
    async with dst.transaction():
        for table in _EMPTY:
            if await dst.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                raise StoreError(f"{where}: table {table} is not empty: copy into a new database")
        if await dst.fetchval("SELECT pruned_seq FROM pruned WHERE id = 1") != 0:
            raise StoreError(f"{where}: table pruned is not fresh: copy into a new database")
        await dst.execute("DELETE FROM pruned")
        for table in tables:
            counts[table] = await _copy_table(src, dst, table, where)
        for table, n in counts.items():
            got = await dst.fetchval(f"SELECT COUNT(*) FROM {table}")
            if got != n:
                raise StoreError(f"{where}: {table} has {got} rows after the copy, not {n}")
        # the identity of gateway_events goes on after the copied numbers
        await dst.execute(
            "SELECT setval(pg_get_serial_sequence('gateway_events', 'seq'),"
            " COALESCE((SELECT MAX(seq) FROM gateway_events), 0) + 1, false)"
        )
    return counts


async def _copy_table(src: aiosqlite.Connection, dst: Any, table: str, where: str) -> int:
    async with src.execute(f"SELECT name FROM pragma_table_info('{table}') ORDER BY cid") as cur:
        columns = [str(r[0]) for r in await cur.fetchall()]
    types = {
        str(r[0]): str(r[1])
        for r in await dst.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = $1",
            table,
        )
    }
    missing = [c for c in columns if c not in types]
    if not types or missing:
        raise StoreError(f"{where}: no table {table} with columns {', '.join(missing or columns)}")
    convert = [_converter(types[c]) for c in columns]
    names = ", ".join(f'"{c}"' for c in columns)
    n = 0
    async with src.execute(f"SELECT {names} FROM {table}") as cur:
        while rows := await cur.fetchmany(BATCH):
            records = [tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in rows]
            await dst.copy_records_to_table(table, records=records, columns=columns)
            n += len(records)
    return n


def _converter(pg_type: str) -> Callable[[Any], Any]:
    """SQLite's value as the PostgreSQL column's binary COPY wants it."""
    if pg_type == "double precision":
        return lambda v: None if v is None else float(v)
    if pg_type in ("bigint", "integer", "smallint"):
        return lambda v: None if v is None else int(v)
    if pg_type == "bytea":
        return lambda v: v if v is None or isinstance(v, bytes) else str(v).encode()
    if pg_type == "text":
        return lambda v: v if v is None or isinstance(v, str) else _text(v)
    return lambda v: v


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["copy_sqlite"]
