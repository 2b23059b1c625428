"""The gateway with the Cloud Run provider, against the Cloud Run simulator: REST submit of the
seed example, ``/v1/events`` and log SSE streams while it runs, a failure, cancel, 429s, a path
injection, and a gateway restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import ADMIN, WRITER, make_config, sse_frames, submit, wait_status, wait_terminal

from egw.testing.cloudrun import CloudRunSimulator, JobScript
from egw.web.app import create_app

SSE = {**WRITER, "Accept": "text/event-stream"}
SEED = {
    "provider": "cloud_run",
    "task": {
        "project": "my-project",
        "region": "asia-east1",
        "job": "my-job",
        "args": ["--day", "2026-11-27"],
        "env": {"MODE": "full"},
        "task_count": 1,
        "timeout_s": 600,
    },
}
Client = TestClient[web.Request, web.Application]
LINES = "".join(f"line {i}\n" for i in range(25))


@pytest.fixture
async def sim() -> AsyncIterator[CloudRunSimulator]:
    s = CloudRunSimulator(token="sim-token", time_scale=0.01, seed=5)
    await s.start()
    yield s
    await s.close()


def gateway(tmp_path: Path, sim: CloudRunSimulator) -> web.Application:
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
                    "logging_settle_s": 0.05,
                    "logging_reads_per_minute": 6000,
                }
            }
        },
    )
    return create_app(cfg)


async def log_text(
    api: Client,
    task_id: str,
    headers: dict[str, str] | None = None,
) -> tuple[str, list[dict[str, str]]]:
    async with api.get(f"/v1/tasks/{task_id}/logs", headers=headers or SSE) as resp:
        assert resp.status == 200
        got = await sse_frames(resp, lambda f: f.get("event") == "end")
    text = "".join(json.loads(f["data"])["text"] for f in got if f.get("event") == "log")
    return text, got


async def test_seed_example_over_sse(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(
            stdout=LINES.splitlines(),
            duration_s=60,
            start_delay_s=10,
            ingest_jitter_s=2,
            system_messages=False,
        ),
    )
    api: Client = await aiohttp_client(gateway(tmp_path, sim))
    async with api.get("/v1/events", headers=SSE) as events:
        task = await submit(api, SEED)
        # tail the log over SSE while the execution runs
        async with api.get(f"/v1/tasks/{task['id']}/logs", headers=SSE) as logs:
            got = await sse_frames(logs, lambda f: f.get("event") == "end")

        def ended(frame: dict[str, str]) -> bool:
            data = json.loads(frame.get("data") or "{}")
            return (
                frame.get("event") == "status"
                and data.get("task_id") == task["id"]
                and data.get("status") == "succeeded"
            )

        seen = await sse_frames(events, ended)
    statuses = [
        json.loads(f["data"])["status"]
        for f in seen
        if f.get("event") == "status" and json.loads(f["data"])["task_id"] == task["id"]
    ]
    assert statuses == ["pending", "queued", "running", "succeeded"]
    text = "".join(json.loads(f["data"])["text"] for f in got if f.get("event") == "log")
    assert text == LINES  # no line lost, none doubled, order kept
    assert got[-1]["event"] == "end"
    # resume from the middle with Last-Event-ID: exactly the rest
    log_ids = [f["id"] for f in got if f.get("event") == "log"]
    if len(log_ids) > 1:
        rest, _ = await log_text(api, task["id"], {**SSE, "Last-Event-ID": log_ids[0]})
        first = json.loads(next(f["data"] for f in got if f.get("event") == "log"))["text"]
        assert first + rest == LINES
    body = await (await api.get(f"/v1/tasks/{task['id']}", headers=WRITER)).json()
    assert body["upstream"]["id"].startswith(
        "projects/my-project/locations/asia-east1/jobs/my-job/executions/my-job-"
    )
    assert body["upstream"]["url"].startswith("https://console.cloud.google.com/")
    assert body["exit_code"] == 0
    (ex,) = sim.executions_of("my-project", "asia-east1", "my-job")
    assert ex.args == ("--day", "2026-11-27") and ex.env["EGW_TASK_ID"] == task["id"]
    ready = await (await api.get("/readyz", headers=ADMIN)).json()
    assert json.dumps(ready).count("logging_reads_last_minute") == 1


async def test_failure_cancel_429s_and_injection(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    sim.add_job(
        "my-project",
        "asia-east1",
        "bad",
        script=JobScript(stdout=[], stderr=["no such file"], exit_code=2),
    )
    sim.add_job(
        "my-project",
        "asia-east1",
        "long",
        script=JobScript(
            # a second (real) between the cancel and its end: the cancel's answer is
            # formed before the poller can see the execution cancelled, however busy
            stdout=[f"tick {i}" for i in range(1000)],
            duration_s=10000,
            cancel_delay_s=100,
        ),
    )
    api: Client = await aiohttp_client(gateway(tmp_path, sim))
    sim.fail("run", 429, times=2)  # ridden out by the retries
    bad = await submit(api, {"provider": "cloud_run", "task": {**SEED["task"], "job": "bad"}})
    long = await submit(api, {"provider": "cloud_run", "task": {**SEED["task"], "job": "long"}})
    failed = await wait_terminal(api, bad["id"])
    assert (failed["status"], failed["exit_code"]) == ("failed", 2)
    assert failed["reason"].startswith("NON_ZERO_EXIT_CODE: ")
    assert (await log_text(api, bad["id"]))[0] == (
        "no such file\n[cloud run] Container called exit(2).\n"
    )
    await wait_status(api, long["id"], "running")
    async with api.get(f"/v1/tasks/{long['id']}/logs", headers=SSE) as resp:
        first = await sse_frames(resp, lambda f: f.get("event") == "log")  # it is writing
    assert json.loads(first[-1]["data"])["text"].startswith("tick 0\n")
    resp = await api.post(f"/v1/tasks/{long['id']}/cancel", headers=WRITER)
    assert resp.status in (200, 202), await resp.text()
    assert (await resp.json())["status"] == "cancelling"
    done = await wait_terminal(api, long["id"])
    assert done["status"] == "cancelled"
    ticks = (await log_text(api, long["id"]))[0].splitlines()
    assert 0 < len(ticks) < 1000 and ticks == [f"tick {i}" for i in range(len(ticks))]
    history = await (await api.get(f"/v1/tasks/{long['id']}/events", headers=WRITER)).json()
    applied = [e["status"] for e in history["events"] if e["applied"]]
    assert applied == ["pending", "queued", "running", "cancelling", "cancelled"], [
        (e["kind"], e["status"], e["applied"], e["source"]) for e in history["events"]
    ]
    for field, value in (("project", "../other"), ("job", "my-job/../x"), ("job", "a%2Fb")):
        resp = await api.post(
            "/v1/tasks",
            headers=WRITER,
            json={"provider": "cloud_run", "task": {**SEED["task"], field: value}},
        )
        assert resp.status == 400
        assert (await resp.json())["error"]["details"]["field"] == f"task.{field}"
    assert sim.count("run") == 4  # two 429s, then one run per job


async def test_gateway_restart_picks_up_running_executions(
    tmp_path: Path, sim: CloudRunSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(stdout=LINES.splitlines(), duration_s=60, system_messages=False),
    )
    first: Client = await aiohttp_client(gateway(tmp_path, sim))
    task = await submit(first, SEED)
    await wait_status(first, task["id"], "running")
    await first.close()  # the gateway goes away while the execution runs
    second: Client = await aiohttp_client(gateway(tmp_path, sim))
    done = await wait_terminal(second, task["id"])
    assert done["status"] == "succeeded"
    assert (await log_text(second, task["id"]))[0] == LINES
    assert len(sim.executions_of("my-project", "asia-east1", "my-job")) == 1
