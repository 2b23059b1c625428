"""A submit that fails ambiguously stays pending and is tried again; a cancel that races a
submit stops what the submit started. Against the Cloud Run simulator (no submit request id)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import WRITER, make_config, wait_terminal

from egw.testing.cloudrun import CloudRunSimulator, JobScript
from egw.web.app import create_app
from egw.web.keys import service_key

TASK = {
    "provider": "cloud_run",
    "task": {"project": "my-project", "region": "asia-east1", "job": "my-job"},
}


@pytest.fixture
async def sim() -> AsyncIterator[CloudRunSimulator]:
    s = CloudRunSimulator(token="sim-token", time_scale=0.01)
    s.add_job("my-project", "asia-east1", "my-job", script=JobScript(duration_s=100))
    await s.start()
    yield s
    await s.close()


async def gateway(aiohttp_client: Any, tmp_path: Path, sim: CloudRunSimulator) -> Any:
    cfg = make_config(
        tmp_path,
        {
            "providers": {
                "cloud_run": {
                    "enabled": True,
                    "run_api_url": sim.url,
                    "logging_api_url": sim.url,
                    "access_token": "sim-token",
                    "poll_min_s": 0.02,
                    "poll_max_s": 0.1,
                    "logging_settle_s": 0.01,
                    "logging_reads_per_minute": 6000,
                }
            }
        },
    )
    app = create_app(cfg)
    api = await aiohttp_client(app)
    app[service_key].submit_retry_s = 0.05
    return api


async def test_an_unavailable_upstream_leaves_the_task_pending_then_it_is_submitted(
    aiohttp_client: Any, tmp_path: Path, sim: CloudRunSimulator
) -> None:
    api = await gateway(aiohttp_client, tmp_path, sim)
    sim.fail("run", 503, times=3)  # the test config retries 3 times: the first launch gives up
    resp = await api.post("/v1/tasks", json=TASK, headers={**WRITER, "Idempotency-Key": "one"})
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "provider_unavailable"
    # the client retries with its key: the same task, still pending, no second one
    again = await api.post("/v1/tasks", json=TASK, headers={**WRITER, "Idempotency-Key": "one"})
    task = await again.json()
    assert again.status == 202 and task["status"] == "pending"
    done = await wait_terminal(api, task["id"])
    assert done["status"] == "succeeded"
    assert len(sim.executions_of("my-project", "asia-east1", "my-job")) == 1
    events = (await (await api.get(f"/v1/tasks/{task['id']}/events", headers=WRITER)).json())[
        "events"
    ]
    assert [e["kind"] for e in events].count("submit_retry") == 1


async def test_cancel_during_a_slow_submit_stops_the_execution(
    aiohttp_client: Any, tmp_path: Path, sim: CloudRunSimulator
) -> None:
    api = await gateway(aiohttp_client, tmp_path, sim)
    sim.delay("run", 0.5)  # the execution starts at once, the answer comes late
    submit = asyncio.create_task(api.post("/v1/tasks", json=TASK, headers=WRITER))
    for _ in range(100):
        listed = (await (await api.get("/v1/tasks", headers=WRITER)).json())["tasks"]
        if listed:
            break
        await asyncio.sleep(0.01)
    cancelled = await api.post(f"/v1/tasks/{listed[0]['id']}/cancel", headers=WRITER)
    assert (await cancelled.json())["status"] == "cancelled"
    await submit
    for _ in range(200):
        (execution,) = sim.executions_of("my-project", "asia-east1", "my-job")
        if execution.cancelled_ns is not None:
            break
        await asyncio.sleep(0.02)
    assert execution.cancelled_ns is not None
    task = await wait_terminal(api, listed[0]["id"])
    assert task["status"] == "cancelled"
