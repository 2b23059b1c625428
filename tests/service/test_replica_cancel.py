"""Two gateways on one PostgreSQL database (``egw/service/replicas.py``): a local task's
process lives on the replica that accepted it, and what another replica records about it
reaches that process: a force cancel of a task already ``cancelling`` (the transition table
leaves the status as it is), a force cancel from ``cancel_failed``, and a timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit_local, wait_status

from egw.service.tasks import TaskService
from egw.web.app import create_app
from egw.web.keys import service_key

Client = TestClient[web.Request, web.Application]
#: ignores SIGTERM (so does its sleep, which inherits the ignored signal): only SIGKILL ends it
STUBBORN = 'trap "" TERM; sleep 600'


@dataclass
class Replica:
    api: Client
    service: TaskService


@pytest.fixture
async def replicas(
    tmp_path: Path, pg_url: str, aiohttp_client: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Replica] = []

    async def start(**local: Any) -> tuple[Replica, Replica]:
        for name in "ab":
            (tmp_path / name).mkdir()
            # a grace long enough that only a force cancel can kill a stubborn process in time
            section = {"kill_grace_s": 600, "cancel_timeout_s": None, **local}
            cfg = make_config(
                tmp_path / name,
                {"storage": {"url": pg_url, "lease_s": 1.0}, "providers": {"local": section}},
            )
            app = create_app(cfg)
            made.append(Replica(await aiohttp_client(app), app[service_key]))
        return made[0], made[1]

    yield start
    # a process a failing test left behind: its replica kills it at once (force), rather
    # than waiting out the grace at its close
    for replica in made[:1]:
        query = "status=running&status=cancelling&status=cancel_failed"
        resp = await replica.api.get(f"/v1/tasks?{query}", headers=WRITER)
        for task in (await resp.json())["tasks"]:
            await replica.api.post(f"/v1/tasks/{task['id']}/cancel?force=true", headers=WRITER)


async def until(check: Callable[[], Any], what: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def status(replica: Replica, task_id: str) -> str:
    resp = await replica.api.get(f"/v1/tasks/{task_id}", headers=WRITER)
    got: str = (await resp.json())["status"]
    return got


async def cancel(replica: Replica, task_id: str, *, force: bool) -> dict[str, Any]:
    suffix = "?force=true" if force else ""
    resp = await replica.api.post(f"/v1/tasks/{task_id}/cancel{suffix}", headers=WRITER)
    assert resp.status == 202, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def running(replica: Replica) -> int:
    count: int = replica.service.providers["local"].health()["running"]
    return count


async def test_a_force_cancel_of_a_cancelling_task_recorded_elsewhere_kills_the_process(
    replicas: Callable[..., Any],
) -> None:
    a, b = await replicas()
    task = await submit_local(a.api, "sh", "-c", STUBBORN)
    assert task["status"] == "running" and running(a) == 1
    assert (await cancel(b, task["id"], force=False))["status"] == "cancelling"
    # A sent SIGTERM, which the process ignores; the force cancel B records leaves the
    # status as it is, and must still reach A, which kills the process group
    assert (await cancel(b, task["id"], force=True))["status"] == "cancelling"

    async def cancelled() -> bool:
        return await status(a, task["id"]) == "cancelled"

    await until(cancelled, "the owner did not act on the force cancel")
    assert running(a) == 0
    resp = await b.api.get(f"/v1/tasks/{task['id']}/events", headers=WRITER)
    asked = [
        (e["applied"], e["data"], e["actor"])
        for e in (await resp.json())["events"]
        if e["kind"] == "cancel_requested"
    ]
    assert asked == [(True, {"force": False}, "writer"), (False, {"force": True}, "writer")]


async def test_a_force_cancel_from_cancel_failed_recorded_elsewhere_kills_the_process(
    replicas: Callable[..., Any],
) -> None:
    a, b = await replicas(cancel_timeout_s=0.5)
    task = await submit_local(a.api, "sh", "-c", STUBBORN)
    await cancel(b, task["id"], force=False)
    await wait_status(b.api, task["id"], "cancel_failed")  # the watchdog, on either replica
    assert (await cancel(b, task["id"], force=True))["status"] == "cancelling"

    async def cancelled() -> bool:
        return await status(a, task["id"]) == "cancelled"

    await until(cancelled, "the owner did not act on the force cancel")
    assert running(a) == 0


async def test_a_timeout_recorded_elsewhere_stops_the_process(
    replicas: Callable[..., Any],
) -> None:
    a, b = await replicas(kill_grace_s=1)
    task = await submit_local(a.api, "sleep", "600", timeout_s=600)
    assert running(a) == 1
    # B's timer fired first (each replica arms the timeouts of the tasks it loads at its
    # start): its timeout is what B's timer records
    timed_out, changed = await b.service.store.writer.command(task["id"], "timeout", actor=None)
    assert changed and timed_out.status.value == "timed_out"

    async def stopped() -> bool:
        return running(a) == 0

    await until(stopped, "the owner did not stop the process of a task that timed out")
    assert await status(a, task["id"]) == "timed_out"
