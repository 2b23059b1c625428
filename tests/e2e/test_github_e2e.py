"""The gateway with the GitHub Actions provider, against the GitHub simulator: REST submit of
the seed example with status by signed webhooks over ``/v1/events`` SSE, logs after
completion, cancel and force-cancel, a failed run, bad signatures and redeliveries at
``POST /v1/webhooks/github``, and the Enterprise Server fallback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, sse_frames, submit, wait_status, wait_terminal

from egw.testing.github import GitHubSimulator, JobScript, RunScript, StepScript
from egw.web.app import create_app
from egw.wire import github as gh

SSE = {**WRITER, "Accept": "text/event-stream"}
SECRET = "e2e-webhook-secret"
TOKEN = "ghp_e2e"
SEED = {
    "provider": "github_actions",
    "task": {"workflow_id": "deploy.yml", "ref": "main", "inputs": {"env": "prod"}},
}
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def sim() -> AsyncIterator[GitHubSimulator]:
    s = GitHubSimulator(
        webhook_secret=SECRET, token=TOKEN, time_scale=0.005, run_creation_delay_s=0.5
    )
    await s.start()
    yield s
    await s.close()


async def gateway(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any], **extra: Any
) -> Client:
    cfg = make_config(
        tmp_path,
        {
            "providers": {
                "github_actions": {
                    "enabled": True,
                    "api_url": sim.base_url,
                    "token": TOKEN,
                    "webhook_secret": SECRET,
                    "owner": "octo-org",
                    "repo": "octo-repo",
                    "poll_min_s": 30,
                    "poll_max_s": 60,
                    **extra,
                }
            }
        },
    )
    api: Client = await aiohttp_client(create_app(cfg))
    sim.webhook_url = str(api.make_url("/v1/webhooks/github"))
    return api


async def log_text(api: Client, task_id: str) -> str:
    async with api.get(f"/v1/tasks/{task_id}/logs", headers=SSE) as resp:
        assert resp.status == 200
        got = await sse_frames(resp, lambda f: f.get("event") == "end")
    return "".join(json.loads(f["data"])["text"] for f in got if f.get("event") == "log")


async def test_seed_example_by_webhooks_over_sse(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await gateway(tmp_path, sim, aiohttp_client)
    # half a second (real) queued: the dispatch's answer (queued) is recorded before the
    # job's in_progress, however busy the machine (2.5 ms by default at this time scale)
    sim.script(RunScript(queue_s=100))
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
    body = await (await api.get(f"/v1/tasks/{task['id']}", headers=WRITER)).json()
    run_id = body["upstream"]["id"]
    assert body["upstream"]["url"] == f"https://github.com/octo-org/octo-repo/actions/runs/{run_id}"
    text = await log_text(api, task["id"])
    assert "[github] job run: in_progress" in text and "env=prod" in text
    # status came by webhooks only: the run was never polled
    assert not [r for r in sim.requests if r[0] == "GET" and r[1].endswith(f"/runs/{run_id}")]
    await sim.deliveries_idle()
    # every delivery was taken (one that beat the dispatch's answer was held, then replayed)
    history = await (await api.get(f"/v1/tasks/{task['id']}/events", headers=WRITER)).json()
    stored = [e for e in history["events"] if e["kind"] == "github.delivery"]
    assert len(stored) == len(sim.deliveries) == 6


async def test_failed_cancel_and_force_cancel(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await gateway(tmp_path, sim, aiohttp_client)
    forever = [StepScript("Deploy", 100_000, output="deploying")]
    sim.script(
        RunScript(
            jobs=[
                JobScript(
                    "test", steps=[StepScript("Test", 1, conclusion="failure", output="1 failed")]
                )
            ]
        ),
        RunScript(jobs=[JobScript("deploy", steps=forever)], queue_s=0),
        RunScript(
            jobs=[
                JobScript("deploy", steps=forever),
                JobScript("notify", steps=forever, always=True),
            ],
            queue_s=0,
        ),
    )
    failed = await submit(api, SEED)
    done = await wait_terminal(api, failed["id"])
    assert (done["status"], done["reason"]) == ("failed", "failure")
    assert "1 failed" in await log_text(api, failed["id"])

    plain = await submit(api, SEED)
    await wait_status(api, plain["id"], "running")
    resp = await api.post(f"/v1/tasks/{plain['id']}/cancel", headers=WRITER)
    assert resp.status in (200, 202), await resp.text()
    assert (await wait_terminal(api, plain["id"]))["status"] == "cancelled"
    assert "deploying" in await log_text(api, plain["id"])

    stubborn = await submit(api, SEED)
    await wait_status(api, stubborn["id"], "running")
    resp = await api.post(f"/v1/tasks/{stubborn['id']}/cancel", headers=WRITER)
    assert resp.status in (200, 202)
    assert (await resp.json())["status"] == "cancelling"  # the always() job keeps going
    resp = await api.post(f"/v1/tasks/{stubborn['id']}/cancel?force=true", headers=WRITER)
    assert resp.status in (200, 202), await resp.text()
    assert (await wait_terminal(api, stubborn["id"]))["status"] == "cancelled"
    assert any(r[1].endswith("/force-cancel") for r in sim.requests)


async def test_cancel_conflict_is_a_409(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await gateway(tmp_path, sim, aiohttp_client)
    sim.script(
        RunScript(
            jobs=[], queue_s=100_000, cancel_conflict="Cannot cancel a workflow run that is queued."
        )
    )
    task = await submit(api, SEED)
    await wait_status(api, task["id"], "queued")
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert resp.status == 409
    assert "Cannot cancel a workflow run that is queued." in (await resp.json())["error"]["message"]


async def test_webhook_endpoint_signatures_and_redelivery(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api = await gateway(tmp_path, sim, aiohttp_client)
    task = await submit(api, SEED)
    await wait_terminal(api, task["id"])
    await sim.deliveries_idle()
    completed = next(
        d for d in sim.deliveries if d.event == "workflow_run" and d.action == "completed"
    )
    headers = {k: v for k, v in completed.headers.items() if k != "X-Hub-Signature-256"}
    resp = await api.post("/v1/webhooks/github", data=completed.body, headers=headers)
    assert resp.status == 401
    resp = await api.post(
        "/v1/webhooks/github",
        data=completed.body,
        headers={**headers, "X-Hub-Signature-256": gh.sign("nope", completed.body)},
    )
    assert resp.status == 401
    resp = await api.post("/v1/webhooks/github", data=completed.body, headers=completed.headers)
    assert (resp.status, await resp.json()) == (200, {"ok": True, "duplicate": True})
    bad = b'{"workflow_run": []}'
    resp = await api.post(
        "/v1/webhooks/github",
        data=bad,
        headers={**headers, "X-Hub-Signature-256": gh.sign(SECRET, bad)},
    )
    assert resp.status == 400
    ping = await sim.ping()
    await sim.deliveries_idle()
    assert ping.answers == [200]


async def test_enterprise_fallback_through_the_gateway(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    sim = GitHubSimulator(
        webhook_secret=SECRET,
        token=TOKEN,
        time_scale=0.005,
        enterprise=True,
        run_creation_delay_s=0.5,
    )
    await sim.start()
    try:
        sim.add_workflow(
            "octo-org",
            "octo-repo",
            "deploy.yml",
            inputs=["env", "egw_id"],
            run_name="deploy ${{ inputs.egw_id }}",
        )
        api = await gateway(
            tmp_path, sim, aiohttp_client, correlation_input="egw_id", poll_min_s=0.05
        )
        task = await submit(api, SEED)
        assert task["status"] == "pending" and task["upstream"]["id"] is None
        done = await wait_terminal(api, task["id"])
        assert done["status"] == "succeeded"
        (run,) = sim.runs.values()
        assert done["upstream"]["id"] == str(run.id)
        assert run.display_title == f"deploy {gh.correlation_id(task['id'])}"
        assert "env=prod" in await log_text(api, task["id"])
    finally:
        await sim.close()
