"""Nomad's event stream behind a lease across `egw serve` replicas on one PostgreSQL
database (ARCHITECTURE.md, "Replicas"): Nomad tasks submitted across three replicas, the
holder of the stream's lease killed (SIGKILL) while they run, another replica takes the
lease within ``lease_s`` (and slack), resumes from the stored cursor, follows the tasks
submitted elsewhere too, and every task ends ``succeeded`` with each move recorded once.
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

from egw.testing.nomad import NomadSimulator

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

LEASE = "nomad-stream:global:default"


@pytest.fixture
async def sim() -> AsyncIterator[NomadSimulator]:
    s = NomadSimulator()
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=WRITER) as session:
        yield session


async def holder(http: aiohttp.ClientSession, gw: Gateway) -> str | None:
    return await lease_holder(http, gw, LEASE)


async def submit(http: aiohttp.ClientSession, gw: Gateway, job: str) -> str:
    body = {
        "provider": "nomad",
        "task": {"job_id": job, "image": "busybox:latest", "command": "echo", "args": [job]},
    }
    async with http.post(f"{gw.url}/v1/tasks", json=body) as resp:
        assert resp.status == 202, await resp.text()
        task_id: str = (await resp.json())["id"]
        return task_id


@pytest.fixture
async def gws(
    tmp_path: Path, sim: NomadSimulator, http: aiohttp.ClientSession
) -> AsyncIterator[list[Gateway]]:
    nomad = {"enabled": True, "address": sim.url, "log_grace_s": 0.5, "blocking_wait_s": 2}
    async with replicas(tmp_path, http, {"nomad": nomad}) as made:
        yield made


async def test_the_stream_moves_to_another_replica_when_its_holder_dies(
    gws: list[Gateway], sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    ids = await by_id(http, gws)
    jobs = [f"lease-{i}" for i in range(6)]
    for job in jobs:
        sim.script(job, duration_s=3, start_delay_s=0.1, stdout=f"{job}\n".encode())
    tasks = [await submit(http, gws[i % 3], job) for i, job in enumerate(jobs)]
    for task_id in tasks:
        await until(http, gws[0], task_id, "running")
    first = await holder(http, gws[0])
    assert first in ids, first
    dead = ids[first]
    # one subscription so far: the holder's (the others stand by)
    assert sim.count("GET", "^/v1/event/stream$") == 1
    dead.kill()  # the jobs still run in Nomad
    killed = time.monotonic()
    seen = len(sim.requests)
    alive = [gw for gw in gws if gw is not dead]
    while (now := await holder(http, alive[0])) in (None, first):
        assert time.monotonic() - killed < LEASE_S + 1.5, "the lease was not taken over"
        await asyncio.sleep(0.05)
    took = time.monotonic() - killed
    successor = ids[str(now)]
    other = next(gw for gw in alive if gw is not successor)
    # tasks submitted after the takeover on the replica that does not hold the stream
    for job in ("lease-6", "lease-7"):
        sim.script(job, duration_s=0.5, start_delay_s=0.1)
        tasks.append(await submit(http, other, job))
    for task_id in tasks:
        await until(http, other, task_id, "succeeded", limit_s=20)
    # the successor subscribed once, resuming after the stored cursor
    [resumed] = [r for r in sim.requests[seen:] if r.path == "/v1/event/stream"]
    assert int(dict(resumed.query).get("index", 0)) > 0
    health = (await ready(http, successor))["providers"]["nomad"]["namespaces"]["default"]
    assert health["connected"] and health["gaps"] == 0
    for task_id in tasks:
        async with http.get(f"{other.url}/v1/tasks/{task_id}/events") as resp:
            events = (await resp.json())["events"]
        moves = Counter(e["status"] for e in events if e["kind"] == "observed" and e["applied"])
        assert moves["succeeded"] == 1 and set(moves.values()) == {1}, (task_id, moves)
    print(f"lease taken over {took:.2f} s after the kill (lease_s {LEASE_S})")


async def test_a_task_submitted_and_cancelled_on_replicas_without_the_stream_ends_cancelled(
    gws: list[Gateway], sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    ids = await by_id(http, gws)
    for _ in range(100):
        if (first := await holder(http, gws[0])) is not None:
            break
        await asyncio.sleep(0.05)
    one, two = (gw for gw in gws if gw is not ids[str(first)])
    sim.script("lease-long", duration_s=60, start_delay_s=0.1)
    task_id = await submit(http, one, "lease-long")
    await until(http, two, task_id, "running")  # followed by the holder
    async with http.post(f"{two.url}/v1/tasks/{task_id}/cancel") as resp:
        assert resp.status in (200, 202), await resp.text()
    done = await until(http, one, task_id, "cancelled", limit_s=15)
    # told apart from a stop made outside egw, which Nomad describes in its own words
    assert done["reason"].startswith("cancelled: Nomad stopped allocation"), done
    assert sim.count("GET", "^/v1/event/stream$") == 1  # the holder's alone
