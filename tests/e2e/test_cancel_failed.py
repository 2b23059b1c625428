"""A cancel that says whether it worked, through the HTTP API against the GitHub simulator:
refused (GitHub's 409 on a queued run, actions/runner#3872), never confirmed (an
``if: always()`` job keeps the run going: the ``cancel_timeout_s`` deadline passes), a
later report moving the task on, and a forced cancel from ``cancel_failed``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from github_gateway import BODY, Client, github_gateway, simulator
from support import WRITER, sse_frames, submit, wait_for, wait_status

from egw.testing.github import GitHubSimulator, JobScript, RunScript, StepScript

SSE = {**WRITER, "Accept": "text/event-stream"}
QUEUED_409 = "Cannot cancel a workflow run that is queued."


@pytest.fixture
async def sim() -> AsyncIterator[GitHubSimulator]:
    s = simulator()
    await s.start()
    yield s
    await s.close()


async def events(api: Client, task_id: str) -> list[dict[str, Any]]:
    resp = await api.get(f"/v1/tasks/{task_id}/events", headers=WRITER)
    body: dict[str, Any] = await resp.json()
    return list(body["events"])


def always_run() -> RunScript:
    """A run whose ``if: always()`` job a normal cancel does not stop (force-cancel does)."""
    return RunScript(
        jobs=[
            JobScript("deploy", steps=[StepScript("Deploy", 10_000)]),
            JobScript("notify", steps=[StepScript("Report", 10_000)], always=True),
        ],
        queue_s=0,
    )


async def test_refused_cancel_is_cancel_failed_with_githubs_reason_then_the_run_goes_on(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await github_gateway(tmp_path, sim, aiohttp_client)
    # queued for 2 s of real time, refusing every cancel, then it runs and succeeds
    quick = JobScript("build", steps=[StepScript("Build", 1, output="built")])
    sim.script(RunScript(jobs=[quick], queue_s=400, cancel_conflict=QUEUED_409))
    async with api.get("/v1/events", headers=SSE) as stream:
        task = await submit(api, BODY)
        await wait_status(api, task["id"], "queued")
        resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
        assert resp.status == 409
        assert QUEUED_409 in (await resp.json())["error"]["message"]
        body = await (await api.get(f"/v1/tasks/{task['id']}", headers=WRITER)).json()
        assert body["status"] == "cancel_failed"
        assert QUEUED_409 in body["reason"] and body["finished_at"] is None

        def failed(frame: dict[str, str]) -> bool:
            data = json.loads(frame.get("data") or "{}")
            return data.get("task_id") == task["id"] and data.get("kind") == "cancel_failed"

        frames = await sse_frames(stream, failed)
    frame = frames[-1]
    assert frame["event"] == "status"
    data = json.loads(frame["data"])
    assert data["status"] == "cancel_failed" and data["prev_status"] == "cancelling"
    assert data["data"]["error"]["details"]["upstream_status"] == 409
    # a force-cancel is allowed from cancel_failed, and refused again the same way
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel?force=true", headers=WRITER)
    assert resp.status == 409
    assert any(r[1].endswith("/force-cancel") for r in sim.requests)
    # upstream's later reports move the task on as usual
    done = await wait_status(api, task["id"], "succeeded")
    assert done["stuck"] is None and done["finished_at"] is not None
    kinds = [e["kind"] for e in await events(api, task["id"])]
    assert kinds.count("cancel_failed") == 2 and kinds.count("cancel_requested") == 2
    metrics = await (await api.get("/metrics")).text()
    assert 'egw_watchdog_verdicts_total{provider="github_actions",verdict="cancel_failed"} 2.0' in (
        metrics
    )


async def test_unconfirmed_cancel_fails_at_the_deadline_and_force_cancel_ends_it(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await github_gateway(tmp_path, sim, aiohttp_client, cancel_timeout_s=0.5)
    sim.script(always_run())
    task = await submit(api, BODY)
    await wait_status(api, task["id"], "running")
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert resp.status == 202 and (await resp.json())["status"] == "cancelling"
    failed = await wait_status(api, task["id"], "cancel_failed")
    assert failed["reason"] == "upstream did not confirm the cancel within 0.5s"
    metrics = await (await api.get("/metrics")).text()
    assert 'egw_tasks{provider="github_actions",status="cancel_failed"} 1.0' in metrics
    last = (await events(api, task["id"]))[-1]
    assert (last["kind"], last["source"], last["data"]) == (
        "cancel_failed",
        "gateway",
        {"deadline": True},
    )
    # the run is still going upstream; force-cancel stops the if: always() job too
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel?force=true", headers=WRITER)
    assert resp.status == 202 and (await resp.json())["status"] == "cancelling"
    done = await wait_for(api, task["id"], lambda t: t["status"] == "cancelled")
    assert done["finished_at"] is not None


async def test_a_confirmed_cancel_never_becomes_cancel_failed(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await github_gateway(tmp_path, sim, aiohttp_client, cancel_timeout_s=0.5)
    sim.script(RunScript(jobs=[JobScript("deploy", steps=[StepScript("Deploy", 10_000)])]))
    task = await submit(api, BODY)
    await wait_status(api, task["id"], "running")
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    await wait_status(api, task["id"], "cancelled")
    assert "cancel_failed" not in [e["kind"] for e in await events(api, task["id"])]
