"""Cloud Run execution states are read a job at a time: ``executions.list`` in pages, demultiplexed
by execution name, ``executions.get`` only for what the list did not show.

Against the simulator over real HTTP (the fixtures of test_cloudrun.py). Where a test needs an
execution to end at a chosen moment it drives the simulator's clock itself."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

from egw.core.model import Task, TaskState
from egw.providers.cloudrun import CloudRunProvider
from egw.testing.cloudrun import JobScript
from egw.testing.sink import MemorySink
from tests.providers.test_cloudrun import FAST_RETRY, SEED, Env, env, until

__all__ = ["env"]  # the fixture, used by name

_ORDER = ["queued", "running", "succeeded"]


def _in_order(env: Env, task: Task, last: str = "succeeded") -> None:
    """Each state reported once, in the order a task moves through them, ending in ``last``."""
    states = env.sink.states(task.id)
    assert states[-1] == last, (task.id, states)
    assert len(states) == len(set(states)), (task.id, states)
    known = [s for s in states if s in _ORDER]
    assert known == sorted(known, key=_ORDER.index), (task.id, states)


class ListSpy:
    """Wraps the simulator's ``executions.list`` handler to record each call's page token
    (None: the first page of a round)."""

    def __init__(self, env: Env) -> None:
        self.tokens: list[str | None] = []
        inner = env.sim._list_executions

        async def spy(request: web.Request, parent: str) -> dict[str, Any]:
            self.tokens.append(request.query.get("pageToken"))
            return await inner(request, parent)

        env.sim._list_executions = spy  # type: ignore[method-assign]

    def rounds(self, since: int = 0) -> int:
        return self.tokens[since:].count(None)


class Clock:
    """The simulator's clock, moved only by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("order", ["newest_first", "oldest_first", "shuffled"])
async def test_many_executions_of_several_jobs_in_small_pages(env: Env, order: str) -> None:
    """Two jobs, 15 executions each, pages of 4, in any order the list may come in: every
    state of every execution is reported once and in order, and while two or more of a job's
    executions run nothing reads an execution alone."""
    env.sim.list_order = order
    for job, seconds in (("job-a", 60), ("job-b", 90)):
        script = JobScript(stdout=[], duration_s=seconds, start_delay_s=5, system_messages=False)
        env.sim.add_job("my-project", "asia-east1", job, script=script)
    p = await env.provider()
    p.status_page_size = 4
    tasks = [env.task(p, job=("job-a", "job-b")[i % 2]) for i in range(30)]
    await asyncio.gather(*(env.submit(p, t) for t in tasks))
    await until(lambda: all(env.sink.tasks[t.id].status is TaskState.RUNNING for t in tasks), 10)
    assert env.sim.count("get_execution") == 0 and env.sim.count("list_executions") > 0
    for task in tasks:
        done = await env.sink.wait_for(task.id, timeout_s=20)
        assert done.status is TaskState.SUCCEEDED
        _in_order(env, task)
    await until(lambda: p.health()["executions_watched"] == 0)


async def test_a_round_reads_only_the_pages_its_executions_fill(env: Env) -> None:
    """12 of egw's executions after 30 older ones of another gateway, pages of 5: newest first,
    a round reads the 3 pages that hold egw's and stops; listed oldest first, it reads its budget
    (the pages its executions fill, plus two) and reads the ones it did not reach alone."""
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(duration_s=10_000))
    others_sink = MemorySink()  # another gateway's store: its tasks are not resumed here
    others = CloudRunProvider(env.cfg, session=env.session, retry=FAST_RETRY)
    await others.start(others_sink)
    for _ in range(30):
        task = others_sink.add_task("cloud_run", others.validate(dict(SEED)).to_json())
        await others.submit(task, idempotency_key=task.id)
    await others.close()
    p = await env.provider(poll_min_s=0.05, poll_max_s=0.05)
    p.status_page_size = 5
    tasks = [env.task(p) for _ in range(12)]
    for task in tasks:
        await env.submit(p, task)

    spy = ListSpy(env)

    async def rounds(n: int) -> tuple[int, int, int]:
        """(rounds begun, list calls, get calls) while the next ``n`` rounds begin."""
        start, gets = len(spy.tokens), env.sim.count("get_execution")
        await until(lambda: spy.rounds(start) > n, 10)
        return spy.rounds(start), len(spy.tokens) - start, env.sim.count("get_execution") - gets

    await until(lambda: all(env.sink.tasks[t.id].status is TaskState.RUNNING for t in tasks))
    seen, lists, gets = await rounds(5)
    assert gets == 0 and 3 * (seen - 1) <= lists <= 3 * (seen + 1)
    env.sim.list_order = "oldest_first"  # egw's are now on pages 7 to 9, past the budget of 5
    await asyncio.sleep(0.2)
    seen, lists, gets = await rounds(5)
    assert 5 * (seen - 1) <= lists <= 5 * (seen + 1)
    assert 12 * (seen - 1) <= gets <= 12 * (seen + 1)  # 25 listed, all of them others'
    for task in tasks:
        assert env.sink.states(task.id) == ["queued", "running"] or env.sink.states(task.id) == [
            "running"
        ]


async def test_an_execution_that_leaves_the_list_is_read_alone_and_fails_when_gone(
    env: Env,
) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(duration_s=10_000))
    p = await env.provider()
    tasks = [env.task(p) for _ in range(4)]
    for task in tasks:
        await env.submit(p, task)
    await until(lambda: all(env.sink.tasks[t.id].status is TaskState.RUNNING for t in tasks))
    await asyncio.sleep(0.2)  # rounds of the four together
    start = len(env.sim.requests)
    gone = env.sink.tasks[tasks[0].id].upstream_id
    assert gone is not None
    del env.sim.executions[gone]  # deleted upstream: no longer listed, and a 404 to a get
    done = await env.sink.wait_for(tasks[0].id, timeout_s=10)
    assert done.status is TaskState.FAILED and "execution is gone" in (done.reason or "")
    assert [path for op, path in env.sim.requests[start:] if op == "get_execution"] == [gone]
    for task in tasks[1:]:
        assert env.sink.tasks[task.id].status is TaskState.RUNNING


async def test_an_execution_ending_between_two_pages_is_reported_once_in_order(env: Env) -> None:
    """Pages of 2 over four executions, newest first. While the first page is on its way back,
    the oldest execution ends and a new one starts (so the list moves by one, and the first
    page's last execution shows again on the second): the ending is reported by that same round,
    once, after running, and the execution seen twice in one round is reported once."""
    clock = Clock()
    env.sim.clock = clock
    env.sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(duration_s=1000, start_delay_s=0, system_messages=False),
    )  # 10 s of the simulator's clock
    p = await env.provider(poll_min_s=2.0, poll_max_s=2.0)
    p.status_page_size = 2
    spy = ListSpy(env)
    tasks = []
    for _ in range(4):
        clock.now += 1  # created (and started) 1 s apart: the list's order is theirs
        tasks.append(env.task(p))
        await env.submit(p, tasks[-1])
    oldest = tasks[0]
    assert env.sink.tasks[oldest.id].status is TaskState.RUNNING
    env.sim.delay("list_executions", 0.3)  # the next first page answers late
    await until(lambda: spy.rounds() >= 1, 5)
    clock.now += 7.05  # the oldest execution ends (the next one 1 s later)
    newcomer = env.task(p)
    await env.submit(p, newcomer)  # and a new one moves the list by one
    done = await env.sink.wait_for(oldest.id, timeout_s=1.5)  # a next round is 2 s away
    assert done.status is TaskState.SUCCEEDED and spy.rounds() == 1
    assert spy.tokens.count(None) == 1 and len(spy.tokens) == 3  # pages [4 3] [3 2] [1]
    for task in tasks:
        states = env.sink.states(task.id)
        assert len(states) == len(set(states)), states
    _in_order(env, oldest)
    assert env.sim.count("get_execution") == 0, [op for op, _ in env.sim.requests]


async def test_a_restart_reads_every_job_with_one_round_and_reports_only_what_changed(
    env: Env,
) -> None:
    for job in ("job-a", "job-b"):
        env.sim.add_job("my-project", "asia-east1", job, script=JobScript(duration_s=300))
    p1 = await env.provider()
    tasks = [env.task(p1, job=("job-a", "job-b")[i % 2]) for i in range(8)]
    await asyncio.gather(*(env.submit(p1, t) for t in tasks))
    await until(lambda: all(env.sink.tasks[t.id].status is TaskState.RUNNING for t in tasks))
    await p1.close()
    before = {t.id: env.sink.states(t.id) for t in tasks}
    spy = ListSpy(env)
    p2 = await env.provider()  # start() picks up the active tasks, reads them at once
    await until(lambda: spy.rounds() >= 2)  # a first round of each job
    assert {t.id: env.sink.states(t.id) for t in tasks} == before  # nothing new to say
    assert env.sim.count("get_execution") == 0
    for task in tasks:
        done = await env.sink.wait_for(task.id, timeout_s=20)
        assert done.status is TaskState.SUCCEEDED
        _in_order(env, task)
    await until(lambda: p2.health()["executions_watched"] == 0)


async def test_failed_lists_are_retried_and_the_states_stay_exact(env: Env) -> None:
    """Lists answering 503 are retried (the shared policy); no state is lost or doubled."""
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(duration_s=30))
    p = await env.provider()
    tasks = [env.task(p) for _ in range(3)]
    for task in tasks:
        await env.submit(p, task)
    env.sim.fail("list_executions", 503, times=3)
    for task in tasks:
        done = await env.sink.wait_for(task.id, timeout_s=20)
        assert done.status is TaskState.SUCCEEDED
        _in_order(env, task)
    assert p.health()["retries"] >= 3
