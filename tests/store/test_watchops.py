"""The watchdog's writes on a real store (SQLite and PostgreSQL): void when the task moved
on since the verdict, once per attempt, and every new column read back after a reopen."""

from __future__ import annotations

import asyncio

import pytest

from egw.core.model import Observation, Stuck, Task, TaskState, new_task_id, utcnow
from egw.store import Store
from egw.store.watchops import CancelFailed, FlagStuck, Resubmit, basis

S = TaskState


def draft() -> Task:
    now = utcnow()
    return Task(id=new_task_id(), provider="local", spec={}, created_at=now, updated_at=now)


@pytest.fixture
async def store(db_address: str):  # type: ignore[no-untyped-def]
    s = Store(db_address)
    await s.open()
    yield s
    await s.close()


async def running(store: Store) -> Task:
    task, _ = await store.writer.create_task(draft())
    await store.writer.set_upstream(task.id, upstream_id="42")
    return await store.writer.observe(task.id, Observation(state=S.RUNNING), source="test")


async def test_a_deadline_verdict_is_void_after_a_newer_cancel(store: Store) -> None:
    task = await running(store)
    first, _ = await store.writer.command(task.id, "cancel", actor="a")
    late = CancelFailed(task.id, "no answer", "gateway", basis=basis(first))
    refused, changed = await store.writer.verdict(CancelFailed(task.id, "409", "local"))
    assert changed and refused.status is S.CANCEL_FAILED
    await asyncio.sleep(0.002)
    again, _ = await store.writer.command(task.id, "cancel", actor="a", data={"force": True})
    assert again.status is S.CANCELLING
    # the first cancel's deadline verdict arrives late: the new cancel has its own
    after, changed = await store.writer.verdict(late)
    assert not changed and after.status is S.CANCELLING


async def test_a_stuck_verdict_is_void_after_output(store: Store) -> None:
    task = await running(store)
    op = FlagStuck(task.id, Stuck(reason="silent", since=utcnow()), basis(task))
    await store.writer.append_log(task.id, "stdout", b"still here\n")
    after, changed = await store.writer.verdict(op)
    assert not changed and after.stuck is None


async def test_resubmit_once_per_attempt_and_everything_survives_a_reopen(
    db_address: str, store: Store
) -> None:
    task = await running(store)
    flagged, _ = await store.writer.verdict(
        FlagStuck(task.id, Stuck(reason="silent", since=utcnow()), basis(task))
    )
    assert flagged.stuck is not None
    read = await store.reader.task(task.id)  # from SQLite, not the writer's cache
    assert read is not None and read.stuck is not None
    assert read.stuck.reason == "silent" and basis(read) == basis(flagged)
    assert [t.id for t in await store.reader.tasks(stuck=True)] == [task.id]
    assert await store.reader.tasks(stuck=False) == []
    assert await store.reader.stuck_counts() == {"local": 1}
    results = await asyncio.gather(*(store.writer.verdict(Resubmit(task.id, 2)) for _ in range(5)))
    assert [changed for _, changed in results].count(True) == 1
    events = await store.reader.events(task_id=task.id)
    assert [e.kind for e in events].count("resubmitted") == 1
    await store.close()
    again = Store(db_address)
    await again.open()
    try:
        stored = await again.reader.task(task.id)
        assert stored is not None
        assert (stored.status, stored.attempt, stored.stuck) == (S.PENDING, 2, None)
        assert stored.upstream == {"retired": ["42"]} and stored.upstream_id is None
        assert stored.status_at is not None and stored.status_at >= flagged.created_at
        assert stored.output_at is None
    finally:
        await again.close()
    await store.open()  # for the fixture's close
