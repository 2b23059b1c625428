"""A restart between recording a resubmit and cancelling what it replaced: at start the Cloud
Run provider cancels the replaced attempts' executions that still go on (and only those), and
none of their states reach the task; nor does a poll that was in flight when the resubmit was
recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from egw.config import CloudRunConfig, RetryConfig
from egw.core.model import TaskState
from egw.providers.cloudrun import CloudRunProvider
from egw.testing.cloudrun import CloudRunSimulator, JobScript
from egw.testing.sink import MemorySink

RETRY = RetryConfig(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, deadline_s=5)
SEED = {"project": "my-project", "region": "asia-east1", "job": "my-job"}


@pytest.fixture
async def sim() -> AsyncIterator[CloudRunSimulator]:
    s = CloudRunSimulator(time_scale=0.01, seed=9)
    await s.start()
    yield s
    await s.close()


async def test_replaced_executions_left_running_by_a_restart_are_cancelled_at_start(
    sim: CloudRunSimulator,
) -> None:
    job = sim.add_job("my-project", "asia-east1", "my-job")
    job.then.append(JobScript(start_delay_s=100_000))  # stays queued
    assert sim.url is not None
    cfg = CloudRunConfig(
        enabled=True,
        run_api_url=sim.url,
        logging_api_url=sim.url,
        access_token="sim-token",
        poll_min_s=0.01,
        poll_max_s=0.05,
        logging_settle_s=0.05,
        logging_reads_per_minute=6000,
    )
    sink = MemorySink()
    async with aiohttp.ClientSession() as session:
        first = CloudRunProvider(cfg, session=session, retry=RETRY)
        await first.start(sink)
        task = sink.add_task("cloud_run", first.validate(SEED).to_json())
        stuck = (await first.submit(task, idempotency_key=task.id)).upstream_id
        done = await first.submit(sink.add_task("cloud_run", task.spec), idempotency_key="x")
        await first.close()  # the gateway stops
        assert stuck is not None and done.upstream_id is not None
        while not sim.executions[done.upstream_id].done(sim.now_ns()):
            await asyncio.sleep(0.02)
        # as recorded by the resubmit (attempt 2, pending, the replaced executions named),
        # before the cancel of the stuck one was sent
        replaced = task.evolve(
            attempt=2,
            status=TaskState.PENDING,
            upstream_id=None,
            upstream={"retired": [stuck, done.upstream_id]},
        )
        sink.tasks[task.id] = replaced
        states = sink.states(task.id)
        second = CloudRunProvider(cfg, session=session, retry=RETRY)
        await second.start(sink)
        try:
            for _ in range(200):
                if sim.executions[stuck].cancelled_ns is not None:
                    break
                await asyncio.sleep(0.02)
            assert sim.executions[stuck].cancelled_ns is not None
            assert sim.count("cancel") == 1  # the ended one is left alone
            await asyncio.sleep(0.3)  # its CANCELLED condition lands: not the task's news
            assert sink.states(task.id) == states
            assert sink.tasks[task.id].status is TaskState.PENDING
        finally:
            await second.close()


async def test_a_poll_in_flight_when_the_resubmit_is_recorded_does_not_reach_attempt_2(
    sim: CloudRunSimulator,
) -> None:
    """The poller's read of attempt 1's execution is on its way (answered late) when the
    resubmit is recorded, before ``retire``: the execution's end it brings back is recorded
    about attempt 1, and not applied to attempt 2."""
    sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(duration_s=5))
    assert sim.url is not None
    cfg = CloudRunConfig(
        enabled=True,
        run_api_url=sim.url,
        logging_api_url=sim.url,
        access_token="sim-token",
        poll_min_s=0.3,
        poll_max_s=0.3,
        logging_settle_s=0.05,
        logging_reads_per_minute=6000,
    )
    sink = MemorySink()
    async with aiohttp.ClientSession() as session:
        provider = CloudRunProvider(cfg, session=session, retry=RETRY)
        await provider.start(sink)
        try:
            task = sink.add_task("cloud_run", provider.validate(SEED).to_json())
            sub = await provider.submit(task, idempotency_key=task.id)
            assert sub.upstream_id is not None
            sink.tasks[task.id] = task.evolve(upstream_id=sub.upstream_id, status=TaskState.QUEUED)
            while not sim.executions[sub.upstream_id].done(sim.now_ns()):
                await asyncio.sleep(0.02)
            reads = sim.count("get_execution")
            sim.delay("get_execution", 1.0)  # the next poll reads the end, answers late
            while sim.count("get_execution") == reads:
                await asyncio.sleep(0.01)
            # the resubmit is recorded while that read is on its way
            sink.tasks[task.id] = sink.tasks[task.id].evolve(
                attempt=2,
                status=TaskState.PENDING,
                upstream_id=None,
                upstream={"retired": [sub.upstream_id]},
            )
            for _ in range(100):
                late = [
                    e
                    for e in sink.events
                    if e.kind == "observe" and e.data["status"] in ("succeeded", "failed")
                ]
                if late:
                    break
                await asyncio.sleep(0.05)
            assert [e.data["applied"] for e in late] == [False]
            assert sink.tasks[task.id].status is TaskState.PENDING
            assert sink.tasks[task.id].attempt == 2
        finally:
            await provider.close()
