"""Cloud Run's pollers and log readers behind a lease across `egw serve` replicas on one
PostgreSQL database (ARCHITECTURE.md, "Replicas"): Cloud Run tasks submitted across three
replicas, the holder of the provider's lease killed (SIGKILL) while the executions run and
their logs are read, another replica takes the lease within ``lease_s`` (and slack), reads
every log on from its stored cursor, follows the tasks submitted elsewhere too, and every
task ends ``succeeded`` with each move recorded once and its output byte for byte.
Skipped, saying so, without a PostgreSQL server."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from db_support import skip_reason
from reliability.faultkit import Gateway, until
from reliability.replicas_kit import LEASE_S, by_id, ready, replicas
from reliability.replicas_kit import holder as lease_holder
from support import WRITER

from egw.testing.cloudrun import CloudRunSimulator, JobScript

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

LEASE = "cloud_run:my-project:asia-east1"
LINES = 30


@pytest.fixture
async def sim() -> AsyncIterator[CloudRunSimulator]:
    s = CloudRunSimulator(token="sim-token", time_scale=0.01, seed=13)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=WRITER) as session:
        yield session


async def holder(http: aiohttp.ClientSession, gw: Gateway) -> str | None:
    return await lease_holder(http, gw, LEASE)


def expected(job: str) -> str:
    return "".join(f"{job} line {i}\n" for i in range(LINES))


def script(sim: CloudRunSimulator, job: str, duration_s: float) -> None:
    """A job whose executions print `expected` evenly over ``duration_s`` (simulated)."""
    lines = [f"{job} line {i}" for i in range(LINES)]
    out = JobScript(stdout=lines, duration_s=duration_s, start_delay_s=5, system_messages=False)
    sim.add_job("my-project", "asia-east1", job, script=out)


async def submit(http: aiohttp.ClientSession, gw: Gateway, job: str) -> str:
    body = {"provider": "cloud_run", "task": {"job": job}}
    async with http.post(f"{gw.url}/v1/tasks", json=body) as resp:
        assert resp.status == 202, await resp.text()
        task_id: str = (await resp.json())["id"]
        return task_id


async def output(http: aiohttp.ClientSession, gw: Gateway, task_id: str) -> tuple[str, bool]:
    """The task's stdout, and whether its log is complete."""
    async with http.get(f"{gw.url}/v1/tasks/{task_id}/logs", params={"stream": "stdout"}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text(), resp.headers["X-Egw-Complete"] == "true"


@pytest.fixture
async def gws(
    tmp_path: Path, sim: CloudRunSimulator, http: aiohttp.ClientSession
) -> AsyncIterator[list[Gateway]]:
    section = {
        "enabled": True,
        "run_api_url": sim.url,
        "logging_api_url": sim.url,
        "access_token": "sim-token",
        "project": "my-project",
        "region": "asia-east1",
        "poll_min_s": 0.05,
        "poll_max_s": 0.2,
        "logging_settle_s": 0.05,
        "logging_reads_per_minute": 6000,
    }
    async with replicas(tmp_path, http, {"cloud_run": section}) as made:
        yield made


async def test_polling_and_log_reading_move_to_another_replica_when_the_holder_dies(
    gws: list[Gateway], sim: CloudRunSimulator, http: aiohttp.ClientSession
) -> None:
    ids = await by_id(http, gws)
    jobs = [f"lease-{i}" for i in range(6)]
    for job in jobs:
        script(sim, job, duration_s=500)  # 5 s: the kill comes while they run
    tasks = {await submit(http, gws[i % 3], job): job for i, job in enumerate(jobs)}
    for task_id in tasks:
        await until(http, gws[0], task_id, "running")
    first = await holder(http, gws[0])
    assert first in ids, first
    dead = ids[first]
    # the holder watches every execution, whichever replica accepted it; the others none
    for gw in gws:
        watched = (await ready(http, gw))["providers"]["cloud_run"]["executions_watched"]
        assert watched == (len(jobs) if gw is dead else 0), (gw.url, watched)
    for task_id, job in tasks.items():  # their logs are being read
        for _ in range(200):
            if f"{job} line 2\n" in (await output(http, gws[0], task_id))[0]:
                break
            await asyncio.sleep(0.05)
    dead.kill()  # the executions still run in Cloud Run
    killed = time.monotonic()
    alive = [gw for gw in gws if gw is not dead]
    while (now := await holder(http, alive[0])) in (None, first):
        assert time.monotonic() - killed < LEASE_S + 1.5, "the lease was not taken over"
        await asyncio.sleep(0.05)
    took = time.monotonic() - killed
    successor = ids[str(now)]
    other = next(gw for gw in alive if gw is not successor)
    # tasks submitted after the takeover on the replica that does not hold the lease
    for job in ("lease-6", "lease-7"):
        script(sim, job, duration_s=50)
        tasks[await submit(http, other, job)] = job
    for task_id, job in tasks.items():
        await until(http, other, task_id, "succeeded", limit_s=20)
        for _ in range(200):
            text, complete = await output(http, other, task_id)
            if complete:
                break
            await asyncio.sleep(0.05)
        assert complete, task_id
        # no line lost or doubled across the kill, in order
        assert text == expected(job), (task_id, text)
    for task_id in tasks:
        async with http.get(f"{other.url}/v1/tasks/{task_id}/events") as resp:
            events = (await resp.json())["events"]
        moves = Counter(e["status"] for e in events if e["kind"] == "observed" and e["applied"])
        assert moves["succeeded"] == 1 and set(moves.values()) == {1}, (task_id, moves)
    assert (await ready(http, other))["providers"]["cloud_run"]["executions_watched"] == 0
    print(f"lease taken over {took:.2f} s after the kill (lease_s {LEASE_S})")
