"""The gateway authenticated as a GitHub App against the GitHub simulator, through the HTTP
API: installation tokens that expire every second during a run that lasts several, a
revoked token refreshed under a cancel, and what `/readyz` and `/metrics` show."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support import WRITER, make_config, sse_frames, submit, wait_status, wait_terminal

from egw.testing.github import GitHubSimulator, JobScript, RunScript, SimApp, StepScript

SECRET = "e2e-app-webhook-secret"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SEED = {
    "provider": "github_actions",
    "task": {"workflow_id": "deploy.yml", "ref": "main", "inputs": {"env": "prod"}},
}
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def sim() -> AsyncIterator[GitHubSimulator]:
    app = SimApp(
        app_id="424242", installation_id=31337, public_key=KEY.public_key(), token_lifetime_s=1
    )
    s = GitHubSimulator(
        webhook_secret=SECRET, time_scale=0.005, run_creation_delay_s=0.5, github_app=app
    )
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def api(tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any]) -> Client:
    key_file = tmp_path / "app.pem"
    key_file.write_bytes(
        KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    app = {"app_id": "424242", "installation_id": 31337, "private_key_file": str(key_file)}
    section = {
        "enabled": True,
        "api_url": sim.base_url,
        "app": app,
        "webhook_secret": SECRET,
        "owner": "octo-org",
        "repo": "octo-repo",
        "poll_min_s": 30,
        "poll_max_s": 60,
    }
    cfg = make_config(tmp_path, {"providers": {"github_actions": section}})
    from egw.web.app import create_app

    client: Client = await aiohttp_client(create_app(cfg))
    sim.webhook_url = str(client.make_url("/v1/webhooks/github"))
    return client


async def test_a_run_outlives_its_tokens_and_is_followed_to_its_logs(
    api: Client, sim: GitHubSimulator
) -> None:
    sim.script(
        RunScript(
            jobs=[
                JobScript(
                    "build",
                    steps=[StepScript("Build", 300, output="built"), StepScript("Test", 300)],
                )
            ]
        )
    )
    task = await submit(api, SEED)
    done = await wait_terminal(api, task["id"])
    assert done["status"] == "succeeded"
    sse = {**WRITER, "Accept": "text/event-stream"}
    async with api.get(f"/v1/tasks/{task['id']}/logs", headers=sse) as resp:
        frames = await sse_frames(resp, lambda f: f.get("event") == "end")  # all output in
    logs = "".join(json.loads(f["data"])["text"] for f in frames if f.get("event") == "log")
    assert "built" in logs  # the job's log, fetched after the first token expired
    assert sim.github_app is not None
    assert len(sim.github_app.issued) >= 2 and not sim.github_app.refusals
    ready = await (await api.get("/readyz")).json()
    expires = ready["providers"]["github_actions"]["app_token_expires_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", expires)
    metrics = await (await api.get("/metrics")).text()
    exchanges = re.search(
        r'egw_upstream_requests_total\{operation="app_token",outcome="ok",'
        r'provider="github_actions"\} (\d+)',
        metrics,
    )
    assert exchanges and int(exchanges.group(1)) == len(sim.github_app.issued)


async def test_a_revoked_token_is_replaced_under_a_cancel(
    api: Client, sim: GitHubSimulator
) -> None:
    assert sim.github_app is not None
    sim.github_app.token_lifetime_s = 3600  # no expiry here: only the revocation refreshes
    sim.script(RunScript(jobs=[JobScript("slow", steps=[StepScript("Wait", 5000)])]))
    task = await submit(api, SEED)
    await wait_status(api, task["id"], "running")
    before = len(sim.github_app.issued)
    sim.github_app.revoke_tokens()
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert resp.status == 202, await resp.text()
    assert (await wait_terminal(api, task["id"]))["status"] == "cancelled"
    assert len(sim.github_app.issued) == before + 1  # one refresh, then the cancel again
    cancels = [r for r in sim.requests if r[1].endswith("/cancel")]
    assert len(cancels) == 2 and cancels[0][2]["Authorization"] != cancels[1][2]["Authorization"]
