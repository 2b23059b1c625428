"""Cloud Run's pollers and log readers on one replica at a time (the `Leading` protocol that
``egw/service/replicas.py`` drives on PostgreSQL), provider against the simulator over HTTP,
with several provider instances sharing one MemorySink as replicas share one database: a
standing-by provider submits and reads nothing more; the holder follows every task from the
stored state; a holder that steps down mid-run stops at once, and the next one finishes the
task with every log line once and each state once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from egw.config import CloudRunConfig, RetryConfig
from egw.core.model import Task, TaskState
from egw.providers.base import Leading, attempt_key
from egw.providers.cloudrun import CloudRunProvider
from egw.testing.cloudrun import CloudRunSimulator, JobScript
from egw.testing.sink import MemorySink

SEED = {"project": "my-project", "region": "asia-east1", "job": "my-job"}
RETRY = RetryConfig(attempts=5, initial_backoff_s=0.01, max_backoff_s=0.05, deadline_s=5)
#: what a replica standing by must not call: the poller's reads and the log reader's
FOLLOWING = ("get_execution", "list_executions", "list_tasks", "list_entries")


class Replicas:
    """Provider instances on one sink, as replicas on one database."""

    def __init__(self, sim: CloudRunSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session
        self.sink = MemorySink()
        self.providers: list[CloudRunProvider] = []
        assert sim.url is not None
        self.cfg = CloudRunConfig(
            enabled=True,
            run_api_url=sim.url,
            logging_api_url=sim.url,
            access_token="sim-token",
            project="my-project",
            region="asia-east1",
            poll_min_s=0.01,
            poll_max_s=0.05,
            logging_settle_s=0.05,
            logging_reads_per_minute=6000,
        )

    async def standing_by(self) -> CloudRunProvider:
        """A replica's provider as `leaders` starts it on PostgreSQL."""
        p = CloudRunProvider(self.cfg, session=self.session, retry=RETRY)
        self.providers.append(p)
        p.stand_by()
        await p.start(self.sink)
        return p

    async def submit(self, p: CloudRunProvider, task: Task) -> Task:
        """What the service does with a submit: record the Submission and its observation."""
        sub = await p.submit(task, idempotency_key=attempt_key(task))
        await self.sink.set_upstream(
            task.id, upstream_id=sub.upstream_id, upstream_url=sub.upstream_url, data=sub.upstream
        )
        assert sub.observation is not None
        await self.sink.observe(task.id, sub.observation, source="cloud_run")
        return self.sink.tasks[task.id]

    def task(self, p: CloudRunProvider) -> Task:
        return self.sink.add_task("cloud_run", p.validate(SEED).to_json())

    def following_calls(self) -> int:
        return sum(self.sim.count(op) for op in FOLLOWING)

    def stdout(self, task: Task) -> str:
        return self.sink.output(task.id, "stdout").decode()

    def moves(self, task: Task) -> Counter[str]:
        """Each state the task was reported in, applied or not (repeated deliveries are not
        recorded): once each means no holder reported a state another had reported."""
        return Counter(
            e.data["status"]
            for e in self.sink.events
            if e.task_id == task.id and e.kind == "observe"
        )


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    sim = CloudRunSimulator(time_scale=0.01, seed=5)
    await sim.start()
    async with aiohttp.ClientSession() as session:
        r = Replicas(sim, session)
        try:
            yield r
        finally:
            for p in r.providers:
                await p.close()
    await sim.close()


async def until(cond: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.005)


def lines(n: int) -> list[str]:
    return [f"line {i}" for i in range(n)]


def script(**kw: Any) -> JobScript:
    return JobScript(system_messages=False, **kw)


async def test_the_lease_is_one_per_provider_config(replicas: Replicas) -> None:
    p = await replicas.standing_by()
    assert isinstance(p, Leading)
    assert p.stream_lease == "cloud_run:my-project:asia-east1"


async def test_a_standing_by_replica_submits_and_reads_nothing_until_it_leads(
    replicas: Replicas,
) -> None:
    replicas.sim.add_job(
        "my-project", "asia-east1", "my-job", script=script(stdout=lines(20), duration_s=500)
    )
    p = await replicas.standing_by()
    task = replicas.task(p)
    submitted = await replicas.submit(p, task)
    assert submitted.upstream_id is not None and replicas.sim.count("run") == 1
    # a cancel of another task on this replica is an upstream call too, and watches nothing
    other = await replicas.submit(p, replicas.task(p))
    ended = await p.cancel(other)
    if ended is not None:  # it read the execution cancelled already: the service records it
        await replicas.sink.observe(other.id, ended, source="cloud_run")
    reads = replicas.following_calls()
    assert replicas.sim.count("get_execution") == 1  # the cancel's own read of its execution
    await asyncio.sleep(0.5)  # fifty poll intervals
    assert replicas.following_calls() == reads, replicas.sim.requests
    assert replicas.sim.count("list_entries") == 0
    assert p.health()["executions_watched"] == 0 and p.health()["log_readers"] == 0
    assert replicas.sink.states(task.id) == ["queued"]
    await p.lead()
    done = await replicas.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED
    assert replicas.stdout(task) == "".join(f"{line}\n" for line in lines(20))
    assert replicas.sink.states(task.id) == ["queued", "running", "succeeded"]
    cancelled = await replicas.sink.wait_for(other.id, logs=True)
    assert cancelled.status is TaskState.CANCELLED


async def test_a_holder_that_steps_down_stops_and_the_next_finishes_each_line_once(
    replicas: Replicas,
) -> None:
    replicas.sim.add_job(
        "my-project", "asia-east1", "my-job", script=script(stdout=lines(60), duration_s=120)
    )
    first = await replicas.standing_by()
    second = await replicas.standing_by()
    await first.lead()
    task = await replicas.submit(second, replicas.task(second))  # on the replica standing by
    await first.follow_new()
    await until(lambda: "line 15\n" in replicas.stdout(task))
    await first.step_down()
    stopped = len(replicas.sim.requests)
    output = replicas.stdout(task)
    assert first.health()["executions_watched"] == 0 and first.health()["log_readers"] == 0
    await asyncio.sleep(0.3)  # thirty poll intervals: nothing more from the old holder
    assert len(replicas.sim.requests) == stopped
    assert replicas.stdout(task) == output
    assert replicas.sink.tasks[task.id].status is TaskState.RUNNING
    await second.lead()
    done = await replicas.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED
    # no line lost or doubled across the switch, in order
    assert replicas.stdout(task) == "".join(f"{line}\n" for line in lines(60))
    assert replicas.sink.states(task.id) == ["queued", "running", "succeeded"]
    moves = replicas.moves(task)
    assert moves["running"] == 1 and moves["succeeded"] == 1, moves


async def test_follow_new_takes_only_tasks_not_followed_and_not_complete(
    replicas: Replicas,
) -> None:
    replicas.sim.add_job(
        "my-project", "asia-east1", "my-job", script=script(stdout=lines(5), duration_s=1)
    )
    holder = await replicas.standing_by()
    other = await replicas.standing_by()
    await holder.lead()
    one = await replicas.submit(other, replicas.task(other))
    await holder.follow_new()
    await replicas.sink.wait_for(one.id, logs=True)
    reads = replicas.following_calls()
    await holder.follow_new()  # the ended task is not watched again
    await asyncio.sleep(0.3)
    assert replicas.following_calls() == reads
    assert holder.health()["executions_watched"] == 0 and holder.health()["log_readers"] == 0
    two = await replicas.submit(other, replicas.task(other))
    await holder.follow_new()
    done = await replicas.sink.wait_for(two.id, logs=True)
    assert done.status is TaskState.SUCCEEDED
    assert replicas.stdout(two) == "".join(f"{line}\n" for line in lines(5))
    assert replicas.stdout(one) == replicas.stdout(two)


async def test_an_attempt_replaced_on_another_replica_is_followed_no_more(
    replicas: Replicas,
) -> None:
    """``on_stuck: resubmit`` carried out by a replica that does not hold the lease: the
    holder stops following attempt 1's execution (none of its states or lines reach the
    task any more) and follows attempt 2's once it is recorded."""
    job = replicas.sim.add_job("my-project", "asia-east1", "my-job")
    job.then.append(JobScript(start_delay_s=100_000))  # attempt 1 stays queued
    job.script = script(stdout=lines(8), duration_s=2)
    holder = await replicas.standing_by()
    other = await replicas.standing_by()
    await holder.lead()
    task = await replicas.submit(other, replicas.task(other))
    stuck = task.upstream_id
    assert stuck is not None
    await holder.follow_new()
    await until(lambda: holder.health()["executions_watched"] == 1)
    # the resubmit as the service records it, then the replaced execution cancelled
    replaced = task.evolve(
        attempt=2, status=TaskState.PENDING, upstream_id=None, upstream={"retired": [stuck]}
    )
    replicas.sink.tasks[task.id] = replaced
    await other.retire(task)  # the replaced attempt, as the watchdog hands it over
    await holder.follow_new()
    assert holder.health()["executions_watched"] == 0
    assert replicas.sim.executions[stuck].cancelled_ns is not None
    await replicas.submit(other, replicas.sink.tasks[task.id])
    await holder.follow_new()
    done = await replicas.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED and done.attempt == 2
    assert done.upstream_id != stuck
    assert replicas.stdout(task) == "".join(f"{line}\n" for line in lines(8))
    assert "cancelled" not in replicas.moves(task)
