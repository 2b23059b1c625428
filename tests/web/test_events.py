"""Event-log routes: JSON history, SSE of all events with replay, filters, reset after pruning."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from support import ADMIN, WRITER, sse_frames, submit_local, wait_terminal

from egw.web.keys import service_key

SSE = {**WRITER, "Accept": "text/event-stream"}


def is_end_of(task_id: str) -> Any:
    def stop(frame: dict[str, str]) -> bool:
        if frame.get("event") != "status":
            return False
        data = json.loads(frame["data"])
        return bool(data["task_id"] == task_id and data["status"] in ("succeeded", "failed"))

    return stop


async def test_live_stream_of_status_changes(api: TestClient[web.Request, web.Application]) -> None:
    async with api.get("/v1/events", headers=SSE) as resp:
        assert resp.status == 200
        task = await submit_local(api, "sh", "-c", "sleep 0.1")
        frames = await sse_frames(resp, is_end_of(task["id"]))
    statuses = [json.loads(f["data"])["status"] for f in frames if f.get("event") == "status"]
    assert statuses == ["pending", "running", "succeeded"]
    ids = [int(f["id"]) for f in frames if "id" in f]
    assert ids == sorted(ids)


async def test_resume_replays_from_the_log(api: TestClient[web.Request, web.Application]) -> None:
    first = await submit_local(api, "true")
    await wait_terminal(api, first["id"])
    history = (await (await api.get(f"/v1/tasks/{first['id']}/events", headers=WRITER)).json())[
        "events"
    ]
    cursor = history[0]["seq"]
    async with api.get("/v1/events", headers={**SSE, "Last-Event-ID": str(cursor)}) as resp:
        frames = await sse_frames(resp, is_end_of(first["id"]))
    replayed = [int(f["id"]) for f in frames if "id" in f]
    assert replayed == [e["seq"] for e in history[1:]]


async def test_filters(api: TestClient[web.Request, web.Application]) -> None:
    noise = await submit_local(api, "true")
    target = await submit_local(api, "true")
    await wait_terminal(api, noise["id"])
    await wait_terminal(api, target["id"])
    async with api.get(
        f"/v1/events?after=0&task_id={target['id']}&provider=local", headers=SSE
    ) as resp:
        frames = await sse_frames(resp, is_end_of(target["id"]))
    assert {
        json.loads(f["data"])["task_id"] for f in frames if "data" in f and "task_id" in f["data"]
    } == {target["id"]}
    async with api.get(f"/v1/tasks/{target['id']}/events", headers=SSE) as resp:
        frames = await sse_frames(resp, is_end_of(target["id"]))
    assert json.loads(frames[-1]["data"])["status"] == "succeeded"


async def test_a_cursor_older_than_retention_gets_reset(
    api: TestClient[web.Request, web.Application],
) -> None:
    old = await submit_local(api, "true")
    await wait_terminal(api, old["id"])
    # retention of 0 days: everything finished is older than the horizon
    service = api.app[service_key]
    service._retention_days = 0
    resp = await api.post("/v1/admin/prune", headers=ADMIN)
    assert resp.status == 200
    assert (await api.get(f"/v1/tasks/{old['id']}", headers=WRITER)).status == 404
    fresh = await submit_local(api, "true")
    async with api.get("/v1/events", headers={**SSE, "Last-Event-ID": "1"}) as resp:
        frames = await sse_frames(resp, is_end_of(fresh["id"]))
    assert frames[1]["event"] == "reset"
    assert json.loads(frames[1]["data"])["reason"] == "retention"
    # the writer token is not admin
    assert (await api.post("/v1/admin/prune", headers=WRITER)).status == 403
