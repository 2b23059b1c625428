"""The gateway with the Nomad provider, against the Nomad simulator: REST submit, the
``/v1/events`` and log SSE streams, cancel, failures, and a gateway restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import db_support
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, sse_frames, submit, wait_status, wait_terminal

from egw.testing.nomad import NomadSimulator
from egw.web.app import create_app

SSE = {**WRITER, "Accept": "text/event-stream"}
SEED = {
    "provider": "nomad",
    "task": {
        "job_id": "demo-job-1",
        "image": "busybox:latest",
        "command": "echo",
        "args": ["hello"],
    },
}
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def sim() -> AsyncIterator[NomadSimulator]:
    s = NomadSimulator(time_scale=0.02)
    await s.start()
    yield s
    await s.close()


def gateway(tmp_path: Path, sim: NomadSimulator) -> web.Application:
    cfg = make_config(
        tmp_path,
        {
            "providers": {
                "nomad": {
                    "enabled": True,
                    "address": sim.url,
                    "log_grace_s": 2,
                    "blocking_wait_s": 5,
                }
            }
        },
    )
    return create_app(cfg)


async def log_text(api: Client, task_id: str) -> tuple[str, list[dict[str, str]]]:
    async with api.get(f"/v1/tasks/{task_id}/logs", headers=SSE) as resp:
        assert resp.status == 200
        got = await sse_frames(resp, lambda f: f.get("event") == "end")
    text = "".join(json.loads(f["data"])["text"] for f in got if f.get("event") == "log")
    return text, got


async def test_seed_example_over_sse(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api: Client = await aiohttp_client(gateway(tmp_path, sim))
    async with api.get("/v1/events", headers=SSE) as resp:
        task = await submit(api, SEED)

        def ended(frame: dict[str, str]) -> bool:
            data = json.loads(frame.get("data") or "{}")
            return (
                frame.get("event") == "status"
                and data.get("task_id") == task["id"]
                and data.get("status") == "succeeded"
            )

        got = await sse_frames(resp, ended)
    statuses = [
        json.loads(f["data"])["status"]
        for f in got
        if f.get("event") == "status" and json.loads(f["data"])["task_id"] == task["id"]
    ]
    assert statuses == ["pending", "queued", "running", "succeeded"]
    text, log_frames = await log_text(api, task["id"])
    assert text == "hello\n"
    assert log_frames[-1]["event"] == "end"
    body = await (await api.get(f"/v1/tasks/{task['id']}", headers=WRITER)).json()
    assert body["upstream"]["id"] == "demo-job-1" and body["exit_code"] == 0
    # the status came from the event stream: Nomad was never polled
    assert sim.count("GET", r"^/v1/job/[^/]+/allocations$") == 0
    # (on PostgreSQL the stream is its lease holder's, which reads the namespace once from
    # a listing when it takes over what was submitted before it led: ARCHITECTURE.md)
    if db_support.STORE == "sqlite":
        assert sim.count("GET", r"^/v1/allocations$") == 0


async def test_cancel_failure_and_placement(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    sim.script("long", stdout=b"started\n", duration_s=1000)
    sim.script("bad", stdout=b"", stderr=b"no such file\n", exit_code=2)
    api: Client = await aiohttp_client(gateway(tmp_path, sim))
    long = await submit(api, {"provider": "nomad", "task": {**SEED["task"], "job_id": "long"}})
    bad = await submit(api, {"provider": "nomad", "task": {**SEED["task"], "job_id": "bad"}})
    huge = await submit(
        api,
        {
            "provider": "nomad",
            "task": {**SEED["task"], "job_id": "huge", "resources": {"memory_mb": 1_000_000}},
        },
    )
    await wait_status(api, long["id"], "running")
    resp = await api.post(f"/v1/tasks/{long['id']}/cancel", headers=WRITER)
    assert resp.status in (200, 202), await resp.text()
    assert (await wait_terminal(api, long["id"]))["status"] == "cancelled"
    assert (await log_text(api, long["id"]))[0] == "started\n"
    failed = await wait_terminal(api, bad["id"])
    assert (failed["status"], failed["exit_code"]) == ("failed", 2)
    assert (await log_text(api, bad["id"]))[0] == "no such file\n"
    placed = await wait_terminal(api, huge["id"])
    assert placed["status"] == "failed" and placed["reason"].startswith("placement failed")
    resp = await api.post(
        "/v1/tasks",
        headers=WRITER,
        json={"provider": "nomad", "task": {**SEED["task"], "job_id": "no/slash"}},
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["details"]["field"] == "task.job_id"


async def test_gateway_restart_picks_up_running_jobs(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    lines = "".join(f"line {i}\n" for i in range(6))
    sim.script("demo-job-1", stdout=lines.encode(), duration_s=30)
    first: Client = await aiohttp_client(gateway(tmp_path, sim))
    task = await submit(first, SEED)
    await wait_status(first, task["id"], "running")
    await first.close()  # the gateway goes away while the job runs
    second: Client = await aiohttp_client(gateway(tmp_path, sim))
    done = await wait_terminal(second, task["id"])
    assert done["status"] == "succeeded"
    assert (await log_text(second, task["id"]))[0] == lines
    history = await (await second.get(f"/v1/tasks/{task['id']}/events", headers=WRITER)).json()
    applied = [e["status"] for e in history["events"] if e["applied"]]
    assert applied == ["pending", "queued", "running", "succeeded"]
