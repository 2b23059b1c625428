"""``on_stuck: resubmit`` with Cloud Run through the HTTP API: an execution that stays queued
(the executions that sit PENDING in PrefectHQ/prefect#16021; the simulator's ``start_delay_s``)
is cancelled and the job run again as a new execution for attempt 2, which egw follows instead.
Once per attempt, bounded by ``max_attempts``; the replaced execution's later states and log
lines never reach the task, even when Cloud Run refuses to cancel it; and a lost ``jobs:run``
answer of attempt 2 is found by the attempt's own key, never by the first attempt's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, sse_frames, submit, wait_for, wait_status

from egw.testing.cloudrun import CloudRunSimulator, JobScript
from egw.web.app import create_app

SSE = {**WRITER, "Accept": "text/event-stream"}
BODY = {
    "provider": "cloud_run",
    "task": {"project": "my-project", "region": "asia-east1", "job": "my-job"},
}
Client = TestClient[web.Request, web.Application]
#: an execution that stays queued for 1,000 s of real time (time_scale 0.01)
STUCK = JobScript(start_delay_s=100_000, stdout=["OLD attempt"])
WATCH_KINDS = {"stuck", "resubmitted", "retire_failed", "resubmit_skipped"}


@pytest.fixture
async def sim() -> AsyncIterator[CloudRunSimulator]:
    s = CloudRunSimulator(token="sim-token", time_scale=0.01, seed=7)
    await s.start()
    yield s
    await s.close()


async def gateway(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any], **extra: Any
) -> Client:
    section = {
        "enabled": True,
        "run_api_url": sim.url,
        "logging_api_url": sim.url,
        "access_token": "sim-token",
        "poll_min_s": 0.02,
        "poll_max_s": 0.1,
        "logging_settle_s": 0.05,
        "logging_reads_per_minute": 6000,
        "queued_timeout_s": 0.3,
        "on_stuck": "resubmit",
        **extra,
    }
    api: Client = await aiohttp_client(
        create_app(make_config(tmp_path, {"providers": {"cloud_run": section}}))
    )
    return api


async def watch_events(api: Client, task_id: str) -> list[dict[str, Any]]:
    resp = await api.get(f"/v1/tasks/{task_id}/events", headers=WRITER)
    return [e for e in (await resp.json())["events"] if e["kind"] in WATCH_KINDS]


async def all_events(api: Client, task_id: str) -> list[dict[str, Any]]:
    resp = await api.get(f"/v1/tasks/{task_id}/events", headers=WRITER)
    return list((await resp.json())["events"])


async def log_text(api: Client, task_id: str) -> str:
    async with api.get(f"/v1/tasks/{task_id}/logs", headers=SSE) as resp:
        got = await sse_frames(resp, lambda f: f.get("event") == "end")
    return "".join(json.loads(f["data"])["text"] for f in got if f.get("event") == "log")


def keys(sim: CloudRunSimulator) -> list[str]:
    """The EGW_TASK_ID of every execution the job has, oldest first."""
    runs = sorted(
        sim.executions_of("my-project", "asia-east1", "my-job"), key=lambda e: e.created_ns
    )
    return [e.env["EGW_TASK_ID"] for e in runs]


async def test_a_stuck_execution_is_cancelled_and_the_job_run_again_once(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    job = sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(stdout=["attempt 2"]))
    job.then.append(STUCK)
    api = await gateway(tmp_path, sim, aiohttp_client, max_attempts=2)
    task = await submit(api, BODY)
    first = (await wait_status(api, task["id"], "queued"))["upstream"]["id"]
    done = await wait_status(api, task["id"], "succeeded")
    assert done["attempt"] == 2 and done["upstream"]["id"] != first
    got = await watch_events(api, task["id"])
    assert [e["kind"] for e in got] == ["stuck", "resubmitted"]
    assert got[1]["data"]["attempt"] == 2
    assert got[1]["data"]["previous"]["upstream_id"] == first
    # the job ran twice, each execution with its attempt's key; the stuck one was cancelled
    assert sim.count("run") == 2
    assert keys(sim) == [task["id"], f"{task['id']}.2"]
    assert sim.executions[first].cancelled_ns is not None
    await asyncio.sleep(0.3)  # the cancelled execution's CANCELLED condition lands meanwhile
    assert sim.executions[first].done(sim.now_ns())
    statuses = [e["status"] for e in await all_events(api, task["id"]) if e["applied"]]
    assert "cancelled" not in statuses and "cancelling" not in statuses
    text = await log_text(api, task["id"])
    assert "attempt 2" in text and "OLD" not in text


async def test_resubmit_stops_at_max_attempts(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    job = sim.add_job("my-project", "asia-east1", "my-job")
    job.then.extend([STUCK, STUCK, STUCK])
    api = await gateway(tmp_path, sim, aiohttp_client, max_attempts=2)
    task = await submit(api, BODY)
    flagged = await wait_for(api, task["id"], lambda t: t["attempt"] == 2 and t["stuck"])
    assert flagged["status"] == "queued"
    got = await watch_events(api, task["id"])
    assert [(e["kind"], e["data"].get("attempt"), e["data"].get("on_stuck")) for e in got] == [
        ("stuck", 1, "resubmit"),
        ("resubmitted", 2, None),
        ("stuck", 2, "flag"),  # no attempts left: flagged only
    ]
    assert sim.count("run") == 2
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    await wait_status(api, task["id"], "cancelled")


async def test_a_refused_cancel_leaves_the_old_execution_running_but_not_reporting(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    """Cloud Run refuses the cancel (403): the new attempt goes ahead; the old execution
    starts later, prints and fails, and none of it reaches the task."""
    job = sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(stdout=["attempt 2"], output_span_s=1, duration_s=100_000),
    )
    job.then.append(JobScript(start_delay_s=100, stdout=["OLD attempt"], exit_code=3))
    api = await gateway(tmp_path, sim, aiohttp_client)
    sim.fail("cancel", 403, message="Permission 'run.executions.cancel' denied")
    task = await submit(api, BODY)
    first = (await wait_status(api, task["id"], "queued"))["upstream"]["id"]
    await wait_for(api, task["id"], lambda t: t["attempt"] == 2 and t["status"] == "running")
    got = await watch_events(api, task["id"])
    assert [e["kind"] for e in got] == ["stuck", "resubmitted", "retire_failed"]
    assert got[2]["data"]["error"]["details"]["upstream_status"] == 403
    assert got[2]["data"]["upstream_id"] == first
    old = sim.executions[first]
    while not old.done(sim.now_ns()):  # the old execution runs after all, and fails
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # many polls and log reads later
    now = await (await api.get(f"/v1/tasks/{task['id']}", headers=WRITER)).json()
    assert now["status"] == "running" and now["attempt"] == 2
    assert now["exit_code"] is None
    events = await all_events(api, task["id"])
    since = next(e["seq"] for e in events if e["kind"] == "resubmitted")
    for event in events:  # after the resubmit, only the refusal names the old execution
        if event["seq"] > since and event["kind"] != "retire_failed":
            assert first not in json.dumps(event), event
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    await wait_status(api, task["id"], "cancelled")
    text = await log_text(api, task["id"])
    assert "attempt 2" in text and "OLD" not in text


async def test_a_lost_run_answer_of_the_new_attempt_is_found_by_its_own_key(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    """Attempt 2's ``jobs:run`` starts an execution and answers 503: egw lists the job's
    executions and adopts the one carrying ``<task id>.2``, not the first attempt's (still
    listed, cancelled), and runs the job no third time."""
    job = sim.add_job("my-project", "asia-east1", "my-job")
    job.then.append(STUCK)
    api = await gateway(tmp_path, sim, aiohttp_client)
    sim.fail("run", 503, skip=1, apply=True)
    task = await submit(api, BODY)
    first = (await wait_status(api, task["id"], "queued"))["upstream"]["id"]
    done = await wait_status(api, task["id"], "succeeded")
    assert done["attempt"] == 2 and done["upstream"]["id"] not in (None, first)
    assert sim.count("run") == 2 and sim.count("list_executions") >= 1
    assert keys(sim) == [task["id"], f"{task['id']}.2"]
    assert sim.executions[done["upstream"]["id"]].env["EGW_TASK_ID"] == f"{task['id']}.2"
