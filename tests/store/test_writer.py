"""Event log on a real SQLite file: group commit, order, dedupe, all-or-nothing batches, pruning."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from egw.core.model import Observation, Task, TaskState, new_task_id, utcnow
from egw.errors import Conflict, NotFound
from egw.store import Store, statements
from egw.store.migrate import load_migrations
from egw.store.ops import Output
from egw.store.postgres.conn import LOG_KEY


def draft(**kw: object) -> Task:
    now = utcnow()
    return Task(
        id=new_task_id(),
        provider="local",
        spec={"command": "x"},
        created_at=now,
        updated_at=now,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def store(db_address: str):  # type: ignore[no-untyped-def]
    s = Store(db_address)
    await s.open()
    yield s
    await s.close()


async def test_concurrent_appends_are_batched_and_ordered(store: Store) -> None:
    task, _ = await store.writer.create_task(draft())
    sizes: list[int] = []
    store.writer.batch_listeners.append(sizes.append)
    await asyncio.gather(
        *(store.writer.progress(task.id, "tick", {"n": i}, source="test") for i in range(2000))
    )
    assert max(sizes) > 50 and sum(sizes) == 2000  # group commit happened
    events = []
    after = 0
    while batch := await store.reader.events(after=after, task_id=task.id):
        events.extend(batch)
        after = batch[-1].seq
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == 2001
    assert [e.data["n"] for e in events[1:]] == list(range(2000))


async def test_duplicate_delivery_is_recorded_once(store: Store) -> None:
    task, _ = await store.writer.create_task(draft())
    obs = Observation(state=TaskState.RUNNING)
    a, b = await asyncio.gather(
        store.writer.observe(task.id, obs, source="github", delivery_id="delivery-1"),
        store.writer.observe(task.id, obs, source="github", delivery_id="delivery-1"),
    )
    assert a.status is b.status is TaskState.RUNNING
    again = await store.writer.progress(task.id, "x", {}, source="github", delivery_id="delivery-1")
    assert again is False
    events = await store.reader.events(task_id=task.id)
    assert [e.kind for e in events] == ["submitted", "observed"]


async def test_stale_observation_is_recorded_not_applied(store: Store) -> None:
    task, _ = await store.writer.create_task(draft())
    await store.writer.observe(
        task.id, Observation(state=TaskState.SUCCEEDED, exit_code=0), source="x"
    )
    after = await store.writer.observe(task.id, Observation(state=TaskState.RUNNING), source="x")
    assert after.status is TaskState.SUCCEEDED
    last = (await store.reader.events(task_id=task.id))[-1]
    assert last.applied is False and last.data["observed"] == "running"
    assert last.status is TaskState.SUCCEEDED


async def test_idempotency_keys(store: Store) -> None:
    t1, created = await store.writer.create_task(draft(), ("alice", "k1", "hash-a"))
    t2, created2 = await store.writer.create_task(draft(), ("alice", "k1", "hash-a"))
    assert created and not created2 and t2.id == t1.id
    with pytest.raises(Conflict):
        await store.writer.create_task(draft(), ("alice", "k1", "hash-b"))
    t3, created3 = await store.writer.create_task(draft(), ("bob", "k1", "hash-a"))
    assert created3 and t3.id != t1.id


async def test_errors_fail_only_their_operation(store: Store) -> None:
    task, _ = await store.writer.create_task(draft())
    ok, missing = await asyncio.gather(
        store.writer.append_log(task.id, "stdout", b"abc"),
        store.writer.append_log("t_nope", "stdout", b"abc"),
        return_exceptions=True,
    )
    assert ok == 3 and isinstance(missing, NotFound)


async def test_a_failed_transaction_leaves_nothing_behind(store: Store, db_address: str) -> None:
    task, _ = await store.writer.create_task(draft())
    before = await store.reader.max_seq()
    # another connection holds the write lock (PostgreSQL: the log's advisory lock): the
    # writer's batch cannot commit
    store.writer.retry_s = 0.3
    if store.dialect == "postgresql":
        other = await asyncpg.connect(db_address)
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT pg_advisory_xact_lock($1)", LOG_KEY)
        await store.writer._db.conn.execute("SET lock_timeout = 50")  # type: ignore[attr-defined]
        with pytest.raises(Exception, match="could not record"):
            await store.writer.observe(task.id, Observation(state=TaskState.RUNNING), source="x")
        await tx.rollback()
        await other.close()
    else:
        raw = sqlite3.connect(db_address, timeout=0.1)
        raw.execute("PRAGMA busy_timeout = 0")
        raw.execute("BEGIN EXCLUSIVE")
        assert store._wthread is not None
        await store._wthread.run(lambda conn: conn.execute("PRAGMA busy_timeout = 50").close())
        with pytest.raises(Exception, match="could not record"):
            await store.writer.observe(task.id, Observation(state=TaskState.RUNNING), source="x")
        raw.rollback()
        raw.close()
    assert store.writer.cached(task.id).status is TaskState.PENDING  # type: ignore[union-attr]
    assert await store.reader.max_seq() == before
    # and the writer goes on, numbering without a gap
    after = await store.writer.observe(task.id, Observation(state=TaskState.RUNNING), source="x")
    assert after.status is TaskState.RUNNING and after.index == before + 1


async def test_output_with_its_cursor_and_provider_data_is_one_commit(store: Store) -> None:
    """`Output`: the chunks, the cursor past them and the provider's data land in one
    commit (one batch of one operation), so a crash leaves all of them or none."""
    task, _ = await store.writer.create_task(draft())
    sizes: list[int] = []
    store.writer.batch_listeners.append(sizes.append)
    op = Output(
        task.id,
        (("stdout", b"one\n"), ("stderr", b"two\n"), ("stdout", b"three\n")),
        cursor=("test:cursor", "14"),
        upstream={"logged_jobs": [7]},
    )
    assert await store.writer.output(op) == 14
    assert sizes == [1]
    chunks = await store.reader.logs(task.id)
    assert [(c.stream, c.data) for c in chunks] == [
        ("stdout", b"one\n"),
        ("stderr", b"two\n"),
        ("stdout", b"three\n"),
    ]
    assert await store.reader.cursor("test:cursor") == "14"
    stored = await store.reader.task(task.id)
    assert stored is not None and stored.upstream["logged_jobs"] == [7]
    assert stored.log_size == 14
    # nothing else: no event for the provider's data
    assert [e.kind for e in await store.reader.events(task_id=task.id)] == ["submitted"]


async def test_prune_removes_old_finished_tasks_and_records_the_horizon(store: Store) -> None:
    old, _ = await store.writer.create_task(draft())
    await store.writer.append_log(old.id, "stdout", b"old output")
    done = await store.writer.observe(old.id, Observation(state=TaskState.SUCCEEDED), source="x")
    live, _ = await store.writer.create_task(draft())
    await store.writer.prune(utcnow() + timedelta(seconds=1))
    assert await store.reader.task(old.id) is None
    assert await store.reader.logs(old.id) == []
    assert await store.reader.task(live.id) is not None
    assert await store.reader.pruned_seq() == done.index
    # a new task never reuses a pruned sequence number
    again, _ = await store.writer.command(live.id, "cancel", actor="me")
    assert again.index > done.index


async def test_migrations_are_numbered_and_tracked(tmp_path: Path) -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    s = Store(str(tmp_path / "m.db"))
    await s.open()
    await s.close()
    conn = sqlite3.connect(tmp_path / "m.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(migrations)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    # opening again applies nothing
    s = Store(str(tmp_path / "m.db"))
    await s.open()
    await s.close()


async def test_a_task_read_after_a_restart_is_warmed_into_the_cache(db_address: str) -> None:
    """Reads of a task the projection cache lacks warm it in, through the writer's queue:
    later reads need no query, and a write racing the load is never undone by it."""
    first = Store(db_address)
    await first.open()
    polled, _ = await first.writer.create_task(draft())
    written, _ = await first.writer.create_task(draft())
    await first.close()

    store = Store(db_address)  # a restart: the cache is empty
    await store.open()
    try:
        batches: list[int] = []
        store.writer.batch_listeners.append(batches.append)
        assert store.writer.cached(polled.id) is None
        store.writer.warm(polled.id)
        store.writer.warm(polled.id)  # asked twice, queued once
        store.writer.warm("t_nope")  # unknown: nothing happens, nothing fails
        for _ in range(20):
            if store.writer.cached(polled.id) is not None:
                break
            await asyncio.sleep(0.01)
        warmed = store.writer.cached(polled.id)
        assert warmed is not None and (warmed.id, warmed.index) == (polled.id, polled.index)
        assert batches == []  # a load writes nothing: no transaction, no batch
        # a write queued behind a load: the cache ends with the write's projection
        store.writer.warm(written.id)
        await store.writer.progress(written.id, "tick", {"n": 1}, source="test")
        cached = store.writer.cached(written.id)
        stored = await store.reader.task(written.id)
        assert cached is not None and stored is not None
        assert cached.index == stored.index > written.index
    finally:
        await store.close()


@pytest.mark.parametrize("sql", [statements.SELECT_IDEMPOTENCY, statements.SELECT_DELIVERIES])
async def test_what_a_batch_reads_first_is_a_search_not_a_scan(store: Store, sql: str) -> None:
    """Each batch looks up its Idempotency-Keys and delivery ids: by the whole key of their
    index, or SQLite reads every key or delivery ever stored, for every batch."""
    if store.dialect == "postgresql":
        pytest.skip("SQLite's query plan (PostgreSQL's lookups join on the same whole keys)")
    conn = sqlite3.connect(store.path)
    try:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sql} (?, ?)", ("a", "b", "c")).fetchall()
    finally:
        conn.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "SEARCH" in details and "SCAN" not in details, details


async def test_a_replayed_key_and_a_seen_delivery_are_found_in_the_database(
    tmp_path: Path,
) -> None:
    """After a restart (nothing in memory) the key and the delivery are read back: per actor
    and per source, so another actor's key or another source's delivery id is no match."""
    first = Store(str(tmp_path / "egw.db"))
    await first.open()
    task, _ = await first.writer.create_task(draft(), ("alice", "k1", "hash-a"))
    await first.writer.progress(task.id, "x", {}, source="github", delivery_id="d-1")
    await first.close()
    store = Store(str(tmp_path / "egw.db"))
    await store.open()
    try:
        again, created = await store.writer.create_task(draft(), ("alice", "k1", "hash-a"))
        assert (again.id, created) == (task.id, False)
        other, created = await store.writer.create_task(draft(), ("bob", "k1", "hash-b"))
        assert created and other.id != task.id
        assert not await store.writer.progress(task.id, "x", {}, source="github", delivery_id="d-1")
        assert await store.writer.progress(task.id, "x", {}, source="nomad", delivery_id="d-1")
    finally:
        await store.close()
