"""Webhook intake at volume: deliveries for runs egw did not start are answered from memory
(no database read), a restarted gateway still knows its runs, and a delivery that beats the
dispatch's answer is applied. The gateway against the GitHub simulator over real HTTP."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit

from egw.testing.github import GitHubSimulator
from egw.web.app import create_app
from egw.web.keys import service_key
from egw.wire import github as gh

SECRET = "ingest-webhook-secret"
TOKEN = "ghp_ingest"
SEED = {
    "provider": "github_actions",
    "task": {"workflow_id": "deploy.yml", "ref": "main", "inputs": {"env": "prod"}},
}
SAMPLE = (
    Path(__file__).resolve().parents[1]
    / "samples/github/webhooks/examples/workflow_run/requested.payload.json"
)
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def sim() -> AsyncIterator[GitHubSimulator]:
    s = GitHubSimulator(webhook_secret=SECRET, token=TOKEN, time_scale=0.005)
    s.hold()  # the tests post the deliveries themselves
    await s.start()
    yield s
    s.release()
    await s.close()


def config(tmp_path: Path, sim: GitHubSimulator) -> Any:
    gh_cfg = {
        "enabled": True,
        "api_url": sim.base_url,
        "token": TOKEN,
        "webhook_secret": SECRET,
        "owner": "octo-org",
        "repo": "octo-repo",
        "poll_min_s": 30,
        "poll_max_s": 60,
    }
    return make_config(tmp_path, {"providers": {"github_actions": gh_cfg}})


async def deliver(api: Client, run_id: int, delivery: str) -> tuple[int, Any]:
    payload = json.loads(SAMPLE.read_text())
    payload["workflow_run"]["id"] = run_id
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "workflow_run",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": gh.sign(SECRET, body),
    }
    resp = await api.post("/v1/webhooks/github", data=body, headers=headers)
    return resp.status, await resp.json()


async def trace_sql(api: Client) -> list[str]:
    """Every statement either connection of the gateway's store runs from now on."""
    store = api.app[service_key].store
    seen: list[str] = []
    assert store._rconn is not None and store._wthread is not None
    await store._rconn.set_trace_callback(seen.append)
    # the write connection is used on its own thread only (list.append is atomic)
    await store._wthread.run(sqlite3.Connection.set_trace_callback, seen.append)
    return seen


async def delivered(api: Client, task_id: str) -> list[int]:
    """The run of each delivery stored on the task."""
    resp = await api.get(f"/v1/tasks/{task_id}/events", headers=WRITER)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return [e["data"]["run_id"] for e in body["events"] if e["kind"] == "github.delivery"]


@pytest.mark.sqlite_only(reason="traces the statements of SQLite's two connections")
async def test_foreign_runs_cost_no_read_and_a_restart_still_knows_egws_runs(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    first: Client = await aiohttp_client(create_app(config(tmp_path, sim)))
    task = await submit(first, SEED)
    run_id = int(task["upstream"]["id"])
    await first.close()

    api: Client = await aiohttp_client(create_app(config(tmp_path, sim)))
    statements = await trace_sql(api)
    for i in range(20):
        status, body = await deliver(api, 8_000_000_000 + i, f"foreign-{i}")
        assert (status, body) == (202, {"ignored": "not a run egw started"})
    lookups = [s for s in statements if s.startswith("SELECT") and "upstream_id = " in s]
    assert lookups == []  # answered from memory, where each was one read before
    # the run started before the restart is egw's: filled in from the store at start
    status, body = await deliver(api, run_id, "own-1")
    assert (status, body) == (200, {"ok": True, "task_id": task["id"]})
    assert await delivered(api, task["id"]) == [run_id]


async def test_a_delivery_that_beats_the_dispatch_answer_is_applied(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api: Client = await aiohttp_client(create_app(config(tmp_path, sim)))
    sim.slow_next(0.5, match="/dispatches")  # GitHub creates the run; its answer is slow
    submitting = asyncio.ensure_future(submit(api, SEED))
    await asyncio.sleep(0.1)
    # the run the dispatch is creating (the simulator numbers runs in order)
    next_run = sim._ids["run"] + 1
    status, body = await deliver(api, next_run, "early-1")
    assert status == 202 and body["held"] is True  # not dropped as foreign: held
    task = await submitting
    assert int(task["upstream"]["id"]) == next_run
    for _ in range(100):  # replayed once the run is known
        if await delivered(api, task["id"]) == [next_run]:
            break
        await asyncio.sleep(0.02)
    assert await delivered(api, task["id"]) == [next_run]
    # and right after the answer, a delivery is egw's at once (the index learnt it)
    status, body = await deliver(api, next_run, "late-1")
    assert (status, body) == (200, {"ok": True, "task_id": task["id"]})
    assert await delivered(api, task["id"]) == [next_run, next_run]
