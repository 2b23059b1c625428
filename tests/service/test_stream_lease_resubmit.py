"""Nomad's stream lease across two gateways on one PostgreSQL database (``lead_while_held``,
``egw/service/replicas.py``): a stuck task resubmitted by the replica that holds the
watchdog's lease but not the stream's. That replica registers attempt 2 and forgets it;
the holder of the stream, which follows attempt 1, must notice the newer attempt and
follow it instead, or attempt 2's moves are never recorded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit, wait_status

from egw.service.tasks import TaskService
from egw.testing.nomad import NomadSimulator
from egw.web.app import create_app
from egw.web.keys import service_key

Client = TestClient[web.Request, web.Application]
JOB = "stuck-job"
BODY = {
    "provider": "nomad",
    "task": {"job_id": JOB, "image": "busybox:latest", "command": "echo", "args": ["hi"]},
}
STREAM = "nomad-stream:global:default"
WATCHDOG = "watchdog"


@pytest.fixture
async def sim() -> AsyncIterator[NomadSimulator]:
    s = NomadSimulator(time_scale=0.02)
    await s.start()
    yield s
    await s.close()


async def until(check: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def read(api: Client, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = await (await api.get(f"/v1/tasks/{task_id}", headers=WRITER)).json()
    return task


async def test_an_attempt_resubmitted_on_a_replica_without_the_stream_is_followed_by_its_holder(
    tmp_path: Path, pg_url: str, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    nomad = {
        "enabled": True,
        "address": sim.url,
        "log_grace_s": 1,
        "blocking_wait_s": 5,
        "on_stuck": "resubmit",
        "queued_timeout_s": 1.0,
        "max_attempts": 2,
    }
    apis: list[Client] = []
    services: list[TaskService] = []

    async def start(name: str) -> None:
        (tmp_path / name).mkdir()
        overrides = {"storage": {"url": pg_url, "lease_s": 1.0}, "providers": {"nomad": nomad}}
        app = create_app(make_config(tmp_path / name, overrides))
        apis.append(await aiohttp_client(app))
        services.append(app[service_key])

    await start("a")
    holder = services[0].store.leases
    await until(lambda: holder.held(STREAM) and holder.held(WATCHDOG), "A took no leases")
    await start("b")
    b_leases = services[1].store.leases
    # the watchdog's lease moves to B (its row names B: A's next renewal fails, B's holds)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "UPDATE leases SET holder = $1, expires_at = now() + interval '1 minute'"
            " WHERE name = $2",
            services[1].store.replica,
            WATCHDOG,
        )
    finally:
        await conn.close()
    await until(
        lambda: b_leases.held(WATCHDOG) and not holder.held(WATCHDOG), "B has no watchdog lease"
    )
    assert holder.held(STREAM) and not b_leases.held(STREAM)
    a, b = apis

    sim.script(JOB, schedule_delay_s=100_000)  # the scheduler never gets to attempt 1
    task = await submit(b, BODY)
    await wait_status(a, task["id"], "queued")
    sim.script(JOB, stdout=b"second\n", duration_s=2)  # what the next registration runs
    # B's watchdog flags attempt 1 stuck, stops its job and registers attempt 2
    deadline = time.monotonic() + 30
    while (done := await read(a, task["id"]))["status"] != "succeeded":
        assert time.monotonic() < deadline, f"attempt 2 was not followed: {done}"
        await asyncio.sleep(0.1)
    assert done["attempt"] == 2 and done["stuck"] is None
    resp = await a.get(f"/v1/tasks/{task['id']}/events", headers=WRITER)
    events = (await resp.json())["events"]
    kinds = [(e["kind"], e["data"].get("attempt")) for e in events]
    assert ("stuck", 1) in kinds and ("resubmitted", 2) in kinds
    moves = [e["status"] for e in events if e["applied"] and e["kind"] == "observed"]
    assert moves == ["queued", "queued", "running", "succeeded"]
    resp = await a.get(f"/v1/tasks/{task['id']}/logs?follow=false", headers=WRITER)
    assert "second" in await resp.text()  # attempt 2's output, followed by the holder
    assert holder.held(STREAM) and b_leases.held(WATCHDOG)  # nothing moved meanwhile
