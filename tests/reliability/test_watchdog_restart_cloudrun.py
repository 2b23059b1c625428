"""A Cloud Run resubmit interrupted by a restart of a real `egw serve` (SIGKILL): the stuck
execution was cancelled and attempt 2's ``jobs:run`` had started an execution, but its answer
had not come back when the gateway died. After the restart egw finds that execution by the
attempt's key (``<task id>.2``) and follows it: the job ran twice in all, never a third time,
and the task ends with attempt 2's execution, not the first attempt's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from reliability.faultkit import Gateway, until
from support import WRITER

from egw.testing.cloudrun import CloudRunSimulator, JobScript

BODY = {
    "provider": "cloud_run",
    "task": {"project": "my-project", "region": "asia-east1", "job": "my-job"},
}


@pytest.fixture
async def sim() -> AsyncIterator[CloudRunSimulator]:
    s = CloudRunSimulator(token="sim-token", time_scale=0.01, seed=11)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=WRITER) as session:
        yield session


async def test_a_resubmit_whose_run_answer_was_lost_in_a_restart_adopts_its_execution(
    tmp_path: Path, sim: CloudRunSimulator, http: aiohttp.ClientSession
) -> None:
    job = sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(stdout=["two"]))
    job.then.append(JobScript(start_delay_s=100_000))  # the first execution stays queued
    section = {
        "enabled": True,
        "run_api_url": sim.url,
        "logging_api_url": sim.url,
        "access_token": "sim-token",
        "poll_min_s": 0.05,
        "poll_max_s": 0.2,
        "logging_settle_s": 0.05,
        "logging_reads_per_minute": 6000,
        "queued_timeout_s": 0.5,
        "on_stuck": "resubmit",
        "max_attempts": 3,
    }
    gw = Gateway(tmp_path, {"providers": {"cloud_run": section}})
    await gw.start(http)
    try:
        async with http.post(f"{gw.url}/v1/tasks", json=BODY) as resp:
            task = await resp.json()
        first = (await until(http, gw, task["id"], "queued"))["upstream"]["id"]
        sim.delay("run", 6)  # attempt 2's jobs:run starts its execution; the answer is late
        for _ in range(400):
            if len(sim.executions) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(sim.executions) == 2
        gw.kill()  # before the answer came back
        await gw.start(http)
        done = await until(http, gw, task["id"], "succeeded")
        second = done["upstream"]["id"]
        assert done["attempt"] == 2 and second not in (None, first)
        assert sim.executions[second].env["EGW_TASK_ID"] == f"{task['id']}.2"
        assert sim.count("run") == 2 and len(sim.executions) == 2
        assert sim.count("list_executions") >= 1  # looked for by the attempt's key
        assert sim.executions[first].cancelled_ns is not None
        async with http.get(f"{gw.url}/v1/tasks/{task['id']}/events") as resp:
            kinds = [e["kind"] for e in (await resp.json())["events"]]
        assert kinds.count("resubmitted") == 1 and kinds.count("stuck") == 1
    finally:
        await gw.stop()
