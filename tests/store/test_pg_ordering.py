"""PostgreSQL: ordering readers can trust with several writers on one log, the cache those
writers keep, and replicas sharing one database (``egw/store/postgres/writes.py``).

Two `Writer`s on one database stand for the replicas of stage 2: each has its own
write connection and its own
projection cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from egw.core.model import Observation, Task, TaskState, new_task_id, utcnow
from egw.errors import StoreError
from egw.store import Store, Writer
from egw.store.batch import Batch
from egw.store.postgres import PgParts
from egw.store.postgres.writes import PgWrites


def draft() -> Task:
    now = utcnow()
    return Task(id=new_task_id(), provider="local", spec={}, created_at=now, updated_at=now)


class SlowCommits(PgWrites):
    """Commits ``slow_s`` after the batch is written (its events numbered), when asked."""

    slow_s = 0.0

    async def write(self, b: Batch) -> None:
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        await super().write(b)


async def writer(url: str, writes: PgWrites | None = None) -> Writer:
    writes = writes or PgWrites(url)
    await writes.open()
    w = Writer(writes)
    await w.start()
    return w


@pytest.fixture
async def parts(pg_url: str) -> AsyncIterator[PgParts]:
    """A migrated database and a reader (its pool) on it, without a gateway's writer."""
    p = PgParts(pg_url, 2)
    await p.open(auto_migrate=True)
    await p.writes.close()  # the writers of these tests have their own
    yield p
    await p.close()


async def close(*writers: Writer) -> None:
    for w in writers:
        await w.close()
        await w._db.close()  # type: ignore[attr-defined]


async def test_a_reader_resuming_after_n_never_skips_a_slower_commit(
    pg_url: str, parts: PgParts
) -> None:
    """Writer A's batch takes long between numbering its events and COMMIT; writer B
    appends meanwhile. A reader polling "after the last seq I saw" (as SSE resume, the
    event replay and blocking queries do) must end with every event, each once, in order:
    B's events can only be numbered after A's commit."""
    slow = SlowCommits(pg_url)
    a, b = await writer(pg_url, slow), await writer(pg_url)
    try:
        ta, _ = await a.create_task(draft())
        tb, _ = await b.create_task(draft())
        seen: list[int] = []
        done = asyncio.Event()

        async def follow() -> None:
            after = 0
            while True:
                finished = done.is_set()
                for e in await parts.reader.events(after=after, limit=1000):
                    seen.append(e.seq)
                    after = e.seq
                if finished:
                    return
                await asyncio.sleep(0.002)

        reader = asyncio.create_task(follow())
        order: list[str] = []

        async def slow_appends() -> None:
            for i in range(5):
                slow.slow_s = 0.15
                await a.progress(ta.id, "tick", {"i": i}, source="a")
                order.append("a")

        async def fast_appends() -> None:
            for i in range(60):
                await b.progress(tb.id, "tick", {"i": i}, source="b")
                order.append("b")
                await asyncio.sleep(0.01)

        try:
            await asyncio.gather(slow_appends(), fast_appends())
        finally:
            done.set()
            await reader
        stored = [e.seq for e in await parts.reader.events(after=0, limit=1000)]
        assert len(stored) == 2 + 5 + 60
        assert stored == sorted(stored) and len(set(stored)) == len(stored)
        assert seen == stored  # nothing skipped, nothing twice, in order
        assert "a" in order[: order.index("a") + 1] and order.count("b") == 60
    finally:
        await close(a, b)


async def test_another_writers_events_evict_its_tasks_from_the_cache(
    pg_url: str, parts: PgParts
) -> None:
    """The log is the cache's invalidation feed: writer 1 cached a task pending, writer 2
    ended it; writer 1's next operation on it sees it ended (its late report is recorded,
    not applied), and numbers its event after writer 2's."""
    one, two = await writer(pg_url), await writer(pg_url)
    try:
        task, _ = await one.create_task(draft())
        assert one.cached(task.id) is not None
        ended = await two.observe(task.id, Observation(state=TaskState.SUCCEEDED), source="two")
        late = await one.observe(task.id, Observation(state=TaskState.RUNNING), source="one")
        assert late.status is TaskState.SUCCEEDED
        stored = await parts.reader.task(task.id)
        assert stored is not None and stored.status is TaskState.SUCCEEDED
        events = await parts.reader.events(task_id=task.id)
        assert [(e.kind, e.applied) for e in events] == [
            ("submitted", True),
            ("observed", True),
            ("observed", False),
        ]
        assert events[-1].seq > ended.index
        # and a task writer 2 creates is numbered after writer 1's (submit_seq too)
        newer, _ = await two.create_task(draft())
        assert newer.submit_seq > task.submit_seq
        third, _ = await one.create_task(draft())
        assert third.submit_seq > newer.submit_seq
    finally:
        await close(one, two)


async def test_another_writers_output_evicts_the_task_and_both_append_to_one_log(
    pg_url: str, parts: PgParts
) -> None:
    """Output alone writes no event, but moves the task's log offset: two writers taking
    turns appending to one task's log (a lease's old and new holder, for a moment) each
    append after the other's bytes, never on the same offset (``log_chunks``' key)."""
    one, two = await writer(pg_url), await writer(pg_url)
    try:
        task, _ = await one.create_task(draft())
        expected = b""
        for i in range(4):
            for w, name in ((one, b"one"), (two, b"two")):
                line = b"%s %d\n" % (name, i)
                expected += line
                assert await w.append_log(task.id, "stdout", line) == len(expected)
        chunks = await parts.reader.logs(task.id)
        assert b"".join(c.data for c in chunks) == expected
    finally:
        await close(one, two)


async def test_a_writer_that_missed_swept_changes_forgets_its_whole_cache(
    pg_url: str, parts: PgParts
) -> None:
    """The feed's rows are swept after a while: a writer idle for longer cannot tell which
    tasks changed, and reads every one again rather than trust a stale offset."""
    one, two = await writer(pg_url), await writer(pg_url)
    try:
        task, _ = await one.create_task(draft())
        assert await one.append_log(task.id, "stdout", b"a") == 1
        assert await two.append_log(task.id, "stdout", b"b") == 2
        other, _ = await two.create_task(draft())
        async with parts.pool.acquire() as conn:
            # as the sweep would: the rows writer one has not seen yet are gone
            await conn.execute("DELETE FROM changes WHERE mark < (SELECT MAX(mark) FROM changes)")
        assert await one.append_log(task.id, "stdout", b"c") == 3
        assert one.cached(other.id) is None
    finally:
        await close(one, two)


async def test_gateway_events_are_numbered_in_commit_order(pg_url: str, parts: PgParts) -> None:
    one, two = await writer(pg_url), await writer(pg_url)
    try:
        await asyncio.gather(
            *(
                w.gateway_event("circuit_open", provider="nomad", target=f"t{i}", data={"i": i})
                for i in range(20)
                for w in (one, two)
            )
        )
        seqs = [e.seq for e in await parts.reader.gateway_events(after=0, limit=100)]
        assert seqs == list(range(1, 41))
    finally:
        await close(one, two)


async def test_replicas_share_the_database_and_each_registers_itself(pg_url: str) -> None:
    """No gateway has the database to itself any more: each opened store is a replica,
    listed in ``replicas`` while it runs and removed when it closes."""
    first, second = Store(pg_url), Store(pg_url)
    await first.open()
    await second.open()
    try:
        admin = await asyncpg.connect(pg_url)
        try:
            ids = {str(r[0]) for r in await admin.fetch("SELECT id FROM replicas")}
            assert len(ids) == 2
            await second.close()
            assert await admin.fetchval("SELECT count(*) FROM replicas") == 1
        finally:
            await admin.close()
    finally:
        await first.close()
        await second.close()


async def test_the_password_is_never_shown(pg_url: str) -> None:
    url = pg_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    store = Store(url)
    assert "s3cret" not in store.path and ":***@" in store.path
    unreachable = Store("postgresql://postgres:s3cret@127.0.0.1:1/egw")
    with pytest.raises(StoreError) as failed:
        await unreachable.open()
    assert "s3cret" not in failed.value.message and ":***@127.0.0.1:1" in failed.value.message


async def test_a_lost_connection_is_a_refusal_and_the_writer_reconnects(
    pg_url: str, parts: PgParts
) -> None:
    w = await writer(pg_url)
    w.retry_first_s, w.retry_max_s = 0.01, 0.05
    try:
        task, _ = await w.create_task(draft())
        pid = w._db.conn.get_server_pid()  # type: ignore[attr-defined]
        admin: Any = await parts.pool.acquire()
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await parts.pool.release(admin)
        moved = await w.observe(task.id, Observation(state=TaskState.RUNNING), source="x")
        assert moved.status is TaskState.RUNNING
        assert w._db.conn.get_server_pid() != pid  # type: ignore[attr-defined]
        assert [e.seq for e in await parts.reader.events(task_id=task.id)] == [1, 2]
    finally:
        await close(w)
