"""``egw migrate --from sqlite:///... --to postgresql://...``: every table copied, byte-exact,
into an empty PostgreSQL database only, and the copy goes on where SQLite stopped."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from egw.cli import main
from egw.core.model import Observation, Task, TaskState, new_task_id, utcnow
from egw.errors import StoreError
from egw.store import Store
from egw.store.db import copy_database

BYTES = bytes(range(256)) * 300  # every byte value, across chunks: not UTF-8


def draft(**kw: object) -> Task:
    now = utcnow()
    return Task(
        id=new_task_id(),
        provider="local",
        spec={"z": 1, "a": [1.5, None], "é": "ü"},  # key order and text kept as written
        created_at=now,
        updated_at=now,
        **kw,  # type: ignore[arg-type]
    )


async def sqlite_database(path: Path) -> tuple[Store, list[str]]:
    s = Store(str(path))
    await s.open()
    ids = []
    for i in range(3):
        t, _ = await s.writer.create_task(
            draft(labels={"n": str(i)}, timeout_s=30), ("alice", f"key-{i}", "hash")
        )
        ids.append(t.id)
        await s.writer.append_log(t.id, "stdout", BYTES)
        await s.writer.append_log(t.id, "stderr", b"\xff\xfe end")
        await s.writer.observe(t.id, Observation(state=TaskState.RUNNING), source="x")
    await s.writer.observe(ids[0], Observation(state=TaskState.SUCCEEDED, exit_code=0), source="x")
    await s.writer.prune(utcnow() + timedelta(seconds=1))  # the first: pruned, seq horizon
    await s.writer.set_cursor("nomad.index", "4242")
    await s.writer.gateway_event("circuit_open", provider="nomad", target="r", data={"b": 1})
    await s.close()
    return s, ids[1:]


async def test_a_sqlite_database_is_copied_whole_and_goes_on(tmp_path: Path, pg_url: str) -> None:
    path = tmp_path / "egw.db"
    _, kept = await sqlite_database(path)
    before = Store(str(path))
    await before.open()
    try:
        events = await before.reader.events(after=0)
        tasks = [await before.reader.task(t) for t in kept]
        logs = [await before.reader.logs(t, limit_bytes=1 << 22) for t in kept]
        gateway = await before.reader.gateway_events(after=0, limit=10)
        pruned = await before.reader.pruned_seq()
    finally:
        await before.close()
    counts = await copy_database(f"sqlite:///{path}", pg_url)
    assert counts["tasks"] == 2 and counts["events"] == len(events) and counts["pruned"] == 1
    assert counts["idempotency_keys"] == 2 and counts["log_chunks"] == 4
    after = Store(pg_url)
    await after.open()
    try:
        assert await after.reader.events(after=0) == events
        assert [await after.reader.task(t) for t in kept] == tasks
        assert [await after.reader.logs(t, limit_bytes=1 << 22) for t in kept] == logs
        assert b"".join(c.data for c in logs[0]) == BYTES + b"\xff\xfe end"
        assert await after.reader.gateway_events(after=0, limit=10) == gateway
        assert await after.reader.cursor("nomad.index") == "4242"
        assert await after.reader.pruned_seq() == pruned > 0
        # the copied key still answers a retry; new numbers follow the copied ones
        again, created = await after.writer.create_task(draft(), ("alice", "key-1", "hash"))
        assert not created and again.id == kept[0]
        moved, _ = await after.writer.command(kept[0], "cancel", actor="alice")
        # (the pruned task's last event was the newest: its number is not used again)
        assert moved.index == max(events[-1].seq, pruned) + 1 == pruned + 1
        await after.writer.gateway_event("circuit_closed", provider="nomad", target="r", data={})
        assert [g.seq for g in await after.reader.gateway_events(after=0, limit=10)] == [1, 2]
    finally:
        await after.close()


async def test_a_copy_into_a_database_with_data_is_refused(tmp_path: Path, pg_url: str) -> None:
    path = tmp_path / "egw.db"
    await sqlite_database(path)
    target = Store(pg_url)
    await target.open()
    await target.writer.set_cursor("mine", "1")
    await target.close()
    with pytest.raises(StoreError, match="table cursors is not empty"):
        await copy_database(f"sqlite:///{path}", pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM tasks") == 0  # nothing half-copied
    finally:
        await conn.close()


def test_the_command_copies_and_says_what(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    path = tmp_path / "egw.db"
    asyncio.run(sqlite_database(path))
    assert main(["migrate", "--from", f"sqlite:///{path}", "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "copied from sqlite:///" in out and "tasks 2" in out and "events " in out
    # again: the target has data now, one line and exit code 1
    assert main(["migrate", "--from", f"sqlite:///{path}", "--to", pg_url]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert main(["migrate", "--from", f"sqlite:///{tmp_path}/none.db", "--to", pg_url]) == 1
    assert "no such SQLite database" in capsys.readouterr().err
