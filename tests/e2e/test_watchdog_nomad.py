"""``on_stuck: resubmit`` with Nomad through the HTTP API, against the Nomad simulator: the
job ID stays the user's; the stuck attempt's job is stopped and the same job ID registered
again with check-and-set, as the attempt's own ``egw_task_id`` (``<task id>.2``); what the
replaced allocation reports later never reaches the task; ``max_attempts`` bounds it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit, wait_for, wait_status

from egw.testing.nomad import NomadSimulator
from egw.web.app import create_app

Client = TestClient[web.Request, web.Application]
JOB = "stuck-job"
BODY = {
    "provider": "nomad",
    "task": {"job_id": JOB, "image": "busybox:latest", "command": "echo", "args": ["hi"]},
}


@pytest.fixture
async def sim() -> AsyncIterator[NomadSimulator]:
    s = NomadSimulator(time_scale=0.02)
    await s.start()
    yield s
    await s.close()


async def gateway(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any], **watch: Any
) -> Client:
    nomad = {
        "enabled": True,
        "address": sim.url,
        "log_grace_s": 1,
        "blocking_wait_s": 5,
        "on_stuck": "resubmit",
        "max_attempts": 2,
        **watch,
    }
    cfg = make_config(tmp_path, {"providers": {"nomad": nomad}})
    api: Client = await aiohttp_client(create_app(cfg))
    return api


async def events(api: Client, task_id: str) -> list[dict[str, Any]]:
    resp = await api.get(f"/v1/tasks/{task_id}/events", headers=WRITER)
    return list((await resp.json())["events"])


async def output(api: Client, task_id: str) -> str:
    resp = await api.get(f"/v1/tasks/{task_id}/logs?follow=false", headers=WRITER)
    return await resp.text()


def watchdog(got: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    return [
        (e["kind"], e["data"].get("attempt"), e["data"].get("on_stuck"))
        for e in got
        if e["kind"] in ("stuck", "resubmitted", "retire_failed", "resubmit_skipped")
    ]


async def test_an_allocation_never_placed_is_resubmitted_under_the_same_job_id(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await gateway(tmp_path, sim, aiohttp_client, queued_timeout_s=0.5)
    sim.script(JOB, schedule_delay_s=100_000)  # the scheduler never gets to attempt 1
    task = await submit(api, BODY)
    await wait_status(api, task["id"], "queued")
    sim.script(JOB, stdout=b"second\n", duration_s=2)  # what the next registration runs
    done = await wait_status(api, task["id"], "succeeded")
    assert done["attempt"] == 2 and done["upstream"]["id"] == JOB
    got = await events(api, task["id"])
    assert watchdog(got) == [("stuck", 1, "resubmit"), ("resubmitted", 2, None)]
    statuses = [e["status"] for e in got if e["applied"] and e["kind"] != "stuck"]
    assert statuses == ["pending", "queued", "pending", "queued", "running", "succeeded"]
    assert [e["data"].get("attempt") for e in got if e["kind"] == "observed"][-2:] == [2, 2]
    # one registration per attempt, a stop in between; the job is the user's, at version 2
    assert sim.count("POST", r"^/v1/jobs$") == 2
    assert sim.count("DELETE", rf"^/v1/job/{JOB}$") == 1
    job = sim.cluster.jobs[("default", JOB)]
    assert job["Meta"]["egw_task_id"] == f"{task['id']}.2" and job["Version"] == 2
    assert "second" in await output(api, task["id"])


async def test_the_replaced_allocation_s_late_end_does_not_reach_the_task(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    """Attempt 1 runs, prints, then goes silent; it ignores the stop for a while (its
    kill_timeout), so its allocation's end comes after attempt 2 was registered."""
    api = await gateway(tmp_path, sim, aiohttp_client, silent_timeout_s=0.5)
    sim.script(JOB, stdout=b"first\n", duration_s=100_000, kill_timeout_s=100, start_delay_s=1)
    task = await submit(api, BODY)
    await wait_status(api, task["id"], "running")
    sim.script(JOB, stdout=b"second\n", duration_s=200, start_delay_s=1)
    done = await wait_status(api, task["id"], "succeeded")
    assert done["attempt"] == 2
    allocs = sorted(sim.cluster.allocs.values(), key=lambda a: a["CreateIndex"])
    assert [a["ClientStatus"] for a in allocs] == ["complete", "complete"]
    first, second = allocs
    assert first["DesiredStatus"] == "stop"
    # attempt 1's allocation ended (killed) while attempt 2 ran: the task did not move
    got = await events(api, task["id"])
    assert [e["status"] for e in got if e["applied"] and e["kind"] == "observed"] == [
        "queued",
        "running",
        "queued",
        "running",
        "succeeded",
    ]
    segments = [e["data"]["alloc_id"] for e in got if e["kind"] == "nomad.allocation"]
    assert segments == [first["ID"], second["ID"]]
    text = await output(api, task["id"])
    assert text.index("first") < text.index("second")


async def test_max_attempts_bounds_the_nomad_resubmits(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await gateway(tmp_path, sim, aiohttp_client, queued_timeout_s=0.4)
    sim.script(JOB, schedule_delay_s=100_000)  # never placed, whichever attempt
    task = await submit(api, BODY)
    flagged = await wait_for(api, task["id"], lambda t: t["attempt"] == 2 and t["stuck"])
    assert flagged["status"] == "queued"
    assert watchdog(await events(api, task["id"])) == [
        ("stuck", 1, "resubmit"),
        ("resubmitted", 2, None),
        ("stuck", 2, "flag"),
    ]
    await asyncio.sleep(0.5)
    assert sim.count("POST", r"^/v1/jobs$") == 2  # attempt 3 never happens
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    await wait_status(api, task["id"], "cancelled")
