"""The stuck-task watchdog through the HTTP API: runs stuck queued (and dispatches stuck
pending) in the GitHub simulator, a silent local task; ``on_stuck`` flag, cancel and resubmit
(once per attempt, bounded by ``max_attempts``)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from github_gateway import BODY, Client, github_gateway, simulator
from support import WRITER, make_config, sse_frames, submit, submit_local, wait_for, wait_status

from egw.testing.github import GitHubSimulator, JobScript, RunScript, StepScript
from egw.web.app import create_app
from egw.web.keys import service_key

SSE = {**WRITER, "Accept": "text/event-stream"}
#: a run that stays queued for 50 s of real time (time_scale 0.005)
STUCK = RunScript(jobs=[JobScript("deploy", steps=[StepScript("Deploy", 1)])], queue_s=10_000)


@pytest.fixture
async def sim() -> AsyncIterator[GitHubSimulator]:
    s = simulator()
    await s.start()
    yield s
    await s.close()


async def kinds(api: Client, task_id: str) -> list[dict[str, Any]]:
    resp = await api.get(f"/v1/tasks/{task_id}/events", headers=WRITER)
    return [e for e in (await resp.json())["events"] if e["kind"] in WATCH_KINDS]


WATCH_KINDS = {
    "stuck", "stuck_cleared", "resubmitted", "cancel_requested", "resubmit_skipped",
    "retire_failed",
}  # fmt: skip


def dispatches(sim: GitHubSimulator) -> int:
    return sum(1 for r in sim.requests if r[0] == "POST" and r[1].endswith("/dispatches"))


async def test_queued_too_long_is_flagged_on_the_task_the_streams_the_list_and_metrics(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await github_gateway(tmp_path, sim, aiohttp_client, queued_timeout_s=0.3)
    sim.script(STUCK)
    async with api.get("/v1/events", headers=SSE) as stream:
        task = await submit(api, BODY)
        assert task["stuck"] is None and task["attempt"] == 1

        def stuck(frame: dict[str, str]) -> bool:
            data = json.loads(frame.get("data") or "{}")
            return data.get("task_id") == task["id"] and data.get("kind") == "stuck"

        frame = (await sse_frames(stream, stuck))[-1]
    assert frame["event"] == "event"  # not a status change: the status is upstream's
    data = json.loads(frame["data"])
    assert data["status"] == "queued" and data["reason"] == "queued upstream for more than 0.3s"
    assert data["data"]["on_stuck"] == "flag"
    body = await (await api.get(f"/v1/tasks/{task['id']}", headers=WRITER)).json()
    assert body["status"] == "queued"
    assert body["stuck"]["reason"] == "queued upstream for more than 0.3s"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["stuck"]["since"])
    listed = await (await api.get("/v1/tasks?stuck=true", headers=WRITER)).json()
    assert [t["id"] for t in listed["tasks"]] == [task["id"]]
    other = await (await api.get("/v1/tasks?stuck=false", headers=WRITER)).json()
    assert task["id"] not in [t["id"] for t in other["tasks"]]
    metrics = await (await api.get("/metrics")).text()
    assert 'egw_tasks_stuck{provider="github_actions"} 1.0' in metrics
    # moving on clears the flag (here: a cancel; the run was queued, so it just ends)
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    done = await wait_status(api, task["id"], "cancelled")
    assert done["stuck"] is None
    assert (await (await api.get("/v1/tasks?stuck=true", headers=WRITER)).json())["tasks"] == []
    metrics = await (await api.get("/metrics")).text()
    assert 'egw_tasks_stuck{provider="github_actions"} 0.0' in metrics
    assert [e["kind"] for e in await kinds(api, task["id"])] == ["stuck", "cancel_requested"]


async def test_on_stuck_cancel(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await github_gateway(
        tmp_path, sim, aiohttp_client, queued_timeout_s=0.3, on_stuck="cancel"
    )
    sim.script(STUCK)
    task = await submit(api, BODY)
    done = await wait_status(api, task["id"], "cancelled")
    got = await kinds(api, task["id"])
    assert [e["kind"] for e in got] == ["stuck", "cancel_requested"]
    assert got[1]["actor"] == "egw:watchdog"
    assert done["stuck"] is None


async def test_on_stuck_resubmit_replaces_the_stuck_run_once(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await github_gateway(
        tmp_path, sim, aiohttp_client, queued_timeout_s=0.3, on_stuck="resubmit", max_attempts=2
    )
    sim.script(STUCK)  # the first run sits queued; the second is the default quick run
    task = await submit(api, BODY)
    first_run = (await wait_status(api, task["id"], "queued"))["upstream"]["id"]
    done = await wait_status(api, task["id"], "succeeded")
    assert done["attempt"] == 2 and done["upstream"]["id"] != first_run
    got = await kinds(api, task["id"])
    assert [e["kind"] for e in got] == ["stuck", "resubmitted"]
    assert got[1]["data"]["attempt"] == 2
    assert got[1]["data"]["previous"]["upstream_id"] == first_run
    assert dispatches(sim) == 2
    # the stuck run was cancelled upstream, and its end did not reach the task
    assert any(r[1].endswith(f"/runs/{first_run}/cancel") for r in sim.requests)
    assert sim.runs[int(first_run)].conclusion == "cancelled"
    assert done["status"] == "succeeded"


async def test_resubmit_stops_at_max_attempts(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await github_gateway(
        tmp_path, sim, aiohttp_client, queued_timeout_s=0.3, on_stuck="resubmit", max_attempts=2
    )
    sim.script(STUCK, STUCK, STUCK)
    task = await submit(api, BODY)
    flagged = await wait_for(api, task["id"], lambda t: t["attempt"] == 2 and t["stuck"])
    assert flagged["status"] == "queued"
    got = await kinds(api, task["id"])
    assert [(e["kind"], e["data"].get("attempt"), e["data"].get("on_stuck")) for e in got] == [
        ("stuck", 1, "resubmit"),
        ("resubmitted", 2, None),
        ("stuck", 2, "flag"),  # no attempts left: flagged only
    ]
    assert dispatches(sim) == 2
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    await wait_status(api, task["id"], "cancelled")


async def test_pending_too_long_is_flagged(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await github_gateway(tmp_path, sim, aiohttp_client, pending_timeout_s=0.3)
    api.app[service_key].submit_retry_s = 60
    sim.fail_next(503, match="dispatches", count=10)
    resp = await api.post("/v1/tasks", json=BODY, headers=WRITER)
    assert resp.status == 503  # ambiguous: the task is kept pending and tried again later
    (task,) = (await (await api.get("/v1/tasks", headers=WRITER)).json())["tasks"]
    flagged = await wait_for(api, task["id"], lambda t: t["stuck"] is not None)
    assert flagged["status"] == "pending"
    assert flagged["stuck"]["reason"] == "pending (not accepted upstream) for more than 0.3s"


async def test_a_silent_local_task_is_flagged_and_output_clears_the_flag(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    cfg = make_config(tmp_path, {"providers": {"local": {"silent_timeout_s": 0.4}}})
    api: Client = await aiohttp_client(create_app(cfg))
    task = await submit_local(api, "sh", "-c", "echo a; sleep 1; echo b; sleep 30")
    flagged = await wait_for(api, task["id"], lambda t: t["stuck"] is not None)
    assert flagged["status"] == "running"
    assert flagged["stuck"]["reason"] == "running without output for more than 0.4s"
    cleared = await wait_for(api, task["id"], lambda t: t["stuck"] is None)
    assert cleared["status"] == "running"
    # silent again: flagged again, from the last output
    again = await wait_for(api, task["id"], lambda t: t["stuck"] is not None)
    assert again["stuck"]["since"] > flagged["stuck"]["since"]
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    await wait_status(api, task["id"], "cancelled")


async def test_a_silent_local_task_is_cancelled_with_on_stuck_cancel(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    local = {"silent_timeout_s": 0.3, "on_stuck": "cancel"}
    api: Client = await aiohttp_client(
        create_app(make_config(tmp_path, {"providers": {"local": local}}))
    )
    task = await submit_local(api, "sleep", "30")
    await wait_status(api, task["id"], "cancelled")
    got = await kinds(api, task["id"])
    assert [e["kind"] for e in got] == ["stuck", "cancel_requested"]


async def test_resubmit_when_github_refuses_to_cancel_the_stuck_run(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    """actions/runner#3872: the queued run answers 409 to cancel. The new attempt goes
    ahead; the old run, which starts later and fails, never touches the task."""
    api = await github_gateway(
        tmp_path, sim, aiohttp_client, queued_timeout_s=0.3, on_stuck="resubmit"
    )
    failing = JobScript("deploy", steps=[StepScript("Deploy", 1, conclusion="failure")])
    sim.script(
        RunScript(jobs=[failing], queue_s=300, cancel_conflict="Cannot cancel a queued run."),
        RunScript(jobs=[JobScript("deploy", steps=[StepScript("Deploy", 600)])], queue_s=0),
    )
    task = await submit(api, BODY)
    first = int((await wait_status(api, task["id"], "queued"))["upstream"]["id"])
    await wait_for(api, task["id"], lambda t: t["attempt"] == 2 and t["status"] == "running")
    got = await kinds(api, task["id"])
    assert [e["kind"] for e in got] == ["stuck", "resubmitted", "retire_failed"]
    assert got[2]["data"]["error"]["details"]["upstream_status"] == 409
    await sim.wait_run(first, "completed")  # the old run ran after all, and failed
    await sim.deliveries_idle()
    assert sim.runs[first].conclusion == "failure"
    now = await (await api.get(f"/v1/tasks/{task['id']}", headers=WRITER)).json()
    assert now["status"] == "running" and now["attempt"] == 2
    assert str(first) not in json.dumps(now)
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    await wait_status(api, task["id"], "cancelled")


async def test_a_pending_task_is_not_resubmitted_its_submit_retries_go_on(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await github_gateway(
        tmp_path, sim, aiohttp_client, pending_timeout_s=0.3, on_stuck="resubmit"
    )
    api.app[service_key].submit_retry_s = 1.0
    sim.fail_next(503, match="dispatches", count=3)  # the first submit's tries, all refused
    resp = await api.post("/v1/tasks", json=BODY, headers=WRITER)
    assert resp.status == 503
    (task,) = (await (await api.get("/v1/tasks", headers=WRITER)).json())["tasks"]
    done = await wait_status(api, task["id"], "succeeded")  # the submit retry got through
    assert done["attempt"] == 1
    got = await kinds(api, task["id"])
    assert [(e["kind"], e["data"].get("on_stuck")) for e in got] == [("stuck", "flag")]
    assert dispatches(sim) == 4
