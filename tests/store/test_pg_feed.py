"""Replicas on one PostgreSQL database: each is shown what the others commit (its feed,
``egw/store/postgres/feed.py``): events, output byte-exact, completions and prunes, in
commit order, each once, its own commits never twice; within 100 ms p99 of the commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from egw.core.model import Observation, Task, TaskState, new_task_id, utcnow
from egw.core.records import Commit
from egw.store import Store

DONE = Observation(state=TaskState.SUCCEEDED, exit_code=0)


def draft() -> Task:
    now = utcnow()
    return Task(id=new_task_id(), provider="local", spec={}, created_at=now, updated_at=now)


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[tuple[Store, Store]]:
    a, b = Store(pg_url), Store(pg_url)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


def heard(store: Store) -> list[Commit]:
    got: list[Commit] = []
    store.writer.listeners.append(got.append)
    return got


async def until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not seen in time"
        await asyncio.sleep(0.005)


async def test_a_replica_sees_the_others_events_output_and_completion(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    on_a, on_b = heard(a), heard(b)
    task, _ = await a.writer.create_task(draft())
    await a.writer.observe(task.id, Observation(state=TaskState.RUNNING), source="local")
    await a.writer.append_log(task.id, "stdout", b"caf\xc3\xa9 \x00\xff")
    await a.writer.append_log(task.id, "stderr", b"two")
    await a.writer.observe(task.id, DONE, source="local")
    await a.writer.logs_complete(task.id)

    def events(commits: list[Commit]) -> list[int]:
        return [e.seq for c in commits for e in c.events]

    await until(lambda: task.id in [t for c in on_b for t in c.logs_completed])
    assert events(on_b) == events(on_a) == [1, 2, 3]
    assert all(c.replicated for c in on_b) and not any(c.replicated for c in on_a)
    chunks = [(ch.offset, ch.stream, ch.data) for c in on_b for ch in c.logs]
    assert chunks == [(0, "stdout", b"caf\xc3\xa9 \x00\xff"), (8, "stderr", b"two")]
    last = [c.tasks[task.id] for c in on_b if task.id in c.tasks][-1]
    assert last.status == TaskState.SUCCEEDED and last.logs_complete
    # B's cache forgot the task: a read there is the database's, not a stale projection
    assert b.writer.cached(task.id) is None or b.writer.cached(task.id) == last
    await asyncio.sleep(0.3)
    assert events(on_a) == [1, 2, 3]  # A was not shown its own commits again


async def test_both_replicas_write_and_each_sees_every_event_once_in_order(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    on_a, on_b = heard(a), heard(b)
    tasks = await asyncio.gather(*(s.writer.create_task(draft()) for s in (a, b) * 20))
    for (t, _), s in zip(tasks, (a, b) * 20, strict=True):
        await s.writer.observe(t.id, Observation(state=TaskState.RUNNING), source="local")
    total = 80

    def seqs(commits: list[Commit]) -> list[int]:
        return [e.seq for c in commits for e in c.events]

    await until(lambda: len(seqs(on_a)) == total and len(seqs(on_b)) == total)
    # each replica: every event once; its own in commit order, the others' in commit order
    for got in (on_a, on_b):
        assert sorted(seqs(got)) == list(range(1, total + 1))
        for replicated in (True, False):
            part = [e.seq for c in got if c.replicated is replicated for e in c.events]
            assert part == sorted(part)


async def test_a_prune_on_one_replica_reaches_the_other(pair: tuple[Store, Store]) -> None:
    a, b = pair
    on_b = heard(b)
    task, _ = await a.writer.create_task(draft())
    await a.writer.observe(task.id, DONE, source="local")
    await until(lambda: any(task.id in c.tasks for c in on_b))
    await b.writer.observe(task.id, DONE, source="local")  # now in B's cache
    await a.writer.prune(utcnow() + timedelta(seconds=1))
    await until(lambda: any(task.id in c.pruned for c in on_b))
    assert b.writer.cached(task.id) is None


async def test_cross_replica_delay_is_within_100_ms_p99(pair: tuple[Store, Store]) -> None:
    a, b = pair
    seen: dict[int, float] = {}
    b.writer.listeners.append(
        lambda c: seen.update((e.seq, time.perf_counter()) for e in c.events if c.replicated)
    )
    task, _ = await a.writer.create_task(draft())
    delays = []
    for i in range(200):
        start = time.perf_counter()
        await a.writer.progress(task.id, "tick", {"i": i}, source="local")
        seq = await a.reader.max_seq()
        await until(lambda s=seq: s in seen)  # type: ignore[misc]
        delays.append(seen[seq] - start)
    delays.sort()
    p99 = delays[int(len(delays) * 0.99) - 1]
    assert p99 < 0.1, f"p99 {p99 * 1000:.1f} ms"


async def test_the_hub_of_each_replica_hears_every_commit_once_in_seq_order(
    pair: tuple[Store, Store],
) -> None:
    """`Store.fan_out` (the hub's seat): own and others' commits interleaved in commit
    order, so a live `/v1/events` stream is in order on every replica."""
    a, b = pair
    ordered: dict[str, list[int]] = {"a": [], "b": []}
    for name, store in (("a", a), ("b", b)):
        store.fan_out(lambda c, n=name: ordered[n].extend(e.seq for e in c.events))  # type: ignore[misc]
    made = await asyncio.gather(*(s.writer.create_task(draft()) for s in (a, b) * 25))
    await asyncio.gather(
        *(
            s.writer.observe(t.id, Observation(state=TaskState.RUNNING), source="local")
            for (t, _), s in zip(made, (a, b) * 25, strict=True)
        )
    )
    await until(lambda: len(ordered["a"]) == 100 and len(ordered["b"]) == 100)
    assert ordered["a"] == ordered["b"] == list(range(1, 101))


async def test_an_own_commit_read_back_while_its_writer_hands_it_is_handed_once(
    pair: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer hands its commit to the feed late (a busy loop): the feed reads it back
    from the database, and the writer's hand arrives during that read. The hub gets the
    commit once: twice was a duplicate frame on every SSE tail of its task."""
    from egw.store.postgres import feed as feed_module

    store = pair[0]
    assert store._pg is not None and store._pg.feed is not None
    feed = store._pg.feed
    task, _ = await store.writer.create_task(draft())
    handed: list[Commit] = []
    feed.ordered.append(handed.append)
    store.writer.listeners.remove(feed.own)  # the writer's hand, held back by the test
    late: list[Commit] = []
    store.writer.listeners.append(late.append)
    monkeypatch.setattr(feed_module, "OWN_WAIT_S", 0.0)
    read_back = feed._read

    async def read_while_the_writer_hands(conn: object, rows: list[object]) -> Commit:
        commit = await read_back(conn, rows)
        for own in late:
            feed.own(own)  # the writer's hand, arriving now
        return commit

    monkeypatch.setattr(feed, "_read", read_while_the_writer_hands)
    await store.writer.append_log(task.id, "stdout", b"once\n")
    await until(lambda: any(c.logs for c in handed))
    await asyncio.sleep(0.3)  # a second hand would come by now
    chunks = [chunk for c in handed for chunk in c.logs]
    assert [(c.offset, c.data) for c in chunks] == [(0, b"once\n")]
