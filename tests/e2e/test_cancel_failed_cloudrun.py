"""cancel_failed with Cloud Run: ``executions.cancel`` refused (403, the token lacks
run.executions.cancel), and a cancel whose CANCELLED condition comes after egw's
cancel_timeout_s (the simulator's ``cancel_delay_s``): cancel_failed, then the poller's report
of the cancelled execution ends the task."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit, wait_status

from egw.testing.cloudrun import CloudRunSimulator, JobScript
from egw.web.app import create_app

BODY = {
    "provider": "cloud_run",
    "task": {"project": "my-project", "region": "asia-east1", "job": "my-job"},
}
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def sim() -> AsyncIterator[CloudRunSimulator]:
    s = CloudRunSimulator(token="sim-token", time_scale=0.01, seed=5)
    await s.start()
    yield s
    await s.close()


async def gateway(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any]
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
        "cancel_timeout_s": 0.5,
    }
    cfg = make_config(tmp_path, {"providers": {"cloud_run": section}})
    api: Client = await aiohttp_client(create_app(cfg))
    return api


async def test_a_refused_cancel_is_cancel_failed_and_the_execution_goes_on(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(duration_s=150))
    api = await gateway(tmp_path, sim, aiohttp_client)
    task = await submit(api, BODY)
    await wait_status(api, task["id"], "running")
    sim.fail("cancel", 403, message="Permission 'run.executions.cancel' denied")
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert resp.status == 502  # provider_error: upstream answered 403
    body = await (await api.get(f"/v1/tasks/{task['id']}", headers=WRITER)).json()
    assert body["status"] == "cancel_failed"
    assert "run.executions.cancel" in body["reason"]
    # the execution runs on and ends: upstream's report moves the task on
    assert (await wait_status(api, task["id"], "succeeded"))["finished_at"] is not None


async def test_a_cancel_confirmed_late_fails_at_the_deadline_then_ends_the_task(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    # CANCELLED only 200 simulated seconds (2 s real) after the cancel
    script = JobScript(duration_s=100_000, cancel_delay_s=200)
    sim.add_job("my-project", "asia-east1", "my-job", script=script)
    api = await gateway(tmp_path, sim, aiohttp_client)
    task = await submit(api, BODY)
    await wait_status(api, task["id"], "running")
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert resp.status == 202
    failed = await wait_status(api, task["id"], "cancel_failed")
    assert failed["reason"] == "upstream did not confirm the cancel within 0.5s"
    await wait_status(api, task["id"], "cancelled")
