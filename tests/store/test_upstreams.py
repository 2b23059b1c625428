"""The in-memory index of upstream ids (`egw.store.upstreams`) and the one-operation
acceptance of a submit (`egw.store.ops.Accept`), on a real store."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from store.test_writer_faults import refuse_writes, until_writable

from egw.core.model import Observation, Task, TaskState, new_task_id, utcnow
from egw.errors import StoreError
from egw.store import Accept, Store

GH = "github_actions"


def draft(provider: str = GH) -> Task:
    now = utcnow()
    return Task(id=new_task_id(), provider=provider, spec={}, created_at=now, updated_at=now)


@pytest.fixture
async def store(db_address: str):  # type: ignore[no-untyped-def]
    s = Store(db_address)
    await s.open()
    s.writer.retry_s, s.writer.retry_first_s, s.writer.retry_max_s = 0.3, 0.02, 0.1
    s.writer.probe_s = 0.05
    yield s
    await s.close()


async def test_a_restart_refills_the_index_from_the_store(db_address: str) -> None:
    first = Store(db_address)
    await first.open()
    task, _ = await first.writer.create_task(draft())
    await first.writer.set_upstream(task.id, upstream_id="30433643")
    local, _ = await first.writer.create_task(draft("local"))
    await first.writer.set_upstream(local.id, upstream_id="4242")
    await first.close()

    again = Store(db_address)
    await again.open()
    try:
        index = again.upstreams
        assert not index.watches(GH)
        await again.watch_upstreams(GH)
        assert index.watches(GH) and not index.watches("local")
        assert index.get(GH, "30433643") == task.id
        assert index.get(GH, "8000000000") is None  # a run egw did not start
    finally:
        await again.close()


async def test_commits_are_noted_from_the_moment_the_index_is_asked_for(store: Store) -> None:
    before, _ = await store.writer.create_task(draft())
    during, _ = await store.writer.create_task(draft())
    await store.writer.set_upstream(before.id, upstream_id="1")
    # a commit racing the load: either the read or the writer's note has it, never neither
    await asyncio.gather(
        store.watch_upstreams(GH), store.writer.set_upstream(during.id, upstream_id="2")
    )
    index = store.upstreams
    assert (index.get(GH, "1"), index.get(GH, "2")) == (before.id, during.id)
    after, _ = await store.writer.create_task(draft())
    assert index.get(GH, "3") is None
    accept = Accept(after.id, "3", None, {"submitted": True}, None, GH)
    await store.writer.accept(accept)
    assert index.get(GH, "3") == after.id  # known as soon as the acceptance is committed


async def test_a_pruned_task_leaves_the_index(store: Store) -> None:
    await store.watch_upstreams(GH)
    task, _ = await store.writer.create_task(draft())
    obs = Observation(state=TaskState.SUCCEEDED)
    await store.writer.accept(Accept(task.id, "7", None, None, obs, GH))
    await store.writer.logs_complete(task.id)
    await store.writer.prune(utcnow() + timedelta(days=1))
    assert store.upstreams.get(GH, "7") is None


async def test_accept_records_upstream_and_observation_in_one_operation(store: Store) -> None:
    task, _ = await store.writer.create_task(draft())
    sizes: list[int] = []
    store.writer.batch_listeners.append(sizes.append)
    obs = Observation(state=TaskState.QUEUED, reason="waiting")
    after = await store.writer.accept(Accept(task.id, "99", "https://x/99", {"a": 1}, obs, GH))
    assert sizes == [1]  # one operation, one commit
    assert (after.status, after.upstream_id, after.upstream["a"]) == (TaskState.QUEUED, "99", 1)
    events = await store.reader.events(task_id=task.id)
    assert [e.kind for e in events] == ["submitted", "upstream", "observed"]
    assert after.index == events[-1].seq


async def test_an_answer_naming_nothing_upstream_records_only_its_observation(
    store: Store,
) -> None:
    task, _ = await store.writer.create_task(draft())
    obs = Observation(state=TaskState.QUEUED, reason="waiting")
    after = await store.writer.accept(Accept(task.id, None, None, {"submitted": True}, obs, GH))
    assert (after.status, after.upstream_id, after.upstream) == (
        TaskState.QUEUED, None, {"submitted": True},
    )  # fmt: skip
    events = await store.reader.events(task_id=task.id)
    assert [e.kind for e in events] == ["submitted", "observed"]
    assert after.index == events[-1].seq
    stored = await store.reader.task(task.id)
    assert stored is not None and stored.upstream == {"submitted": True}  # stored too


async def test_accept_the_store_refuses_writes_neither_half(store: Store) -> None:
    """A disk with no room even for the WAL (or a read-only file) refuses every write."""
    task, _ = await store.writer.create_task(draft())
    await refuse_writes(store)
    obs = Observation(state=TaskState.QUEUED)
    with pytest.raises(StoreError, match=r"readonly|read-only"):
        await store.writer.accept(Accept(task.id, "5", None, {"submitted": True}, obs, GH))
    await refuse_writes(store, False)
    await until_writable(store)
    stored = await store.reader.task(task.id)
    assert stored is not None
    assert (stored.status, stored.upstream_id) == (TaskState.PENDING, None)
    assert [e.kind for e in await store.reader.events(task_id=task.id)] == ["submitted"]


async def test_a_task_holds_only_its_current_upstream_id(store: Store) -> None:
    """A resubmit gives the task a new run: the replaced run's deliveries find no task."""
    await store.watch_upstreams(GH)
    task, _ = await store.writer.create_task(draft())
    await store.writer.set_upstream(task.id, upstream_id="100")
    await store.writer.set_upstream(task.id, upstream_id="200")
    assert store.upstreams.get(GH, "100") is None
    assert await store.find_upstream(GH, "100") is None
    found = await store.find_upstream(GH, "200")
    assert found is not None and found.id == task.id
