"""The watchdog across restarts of a real `egw serve` (SIGKILL) against the GitHub simulator:
a cancel deadline running when the gateway dies still fires after the restart (its time
comes from the stored record), one that passed while it was down fires at start, and a
resubmit interrupted before its new attempt started upstream starts it once after the
restart, never a third attempt nor a second run for the attempt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from reliability.faultkit import Gateway, until
from support import WRITER

from egw.testing.github import GitHubSimulator, JobScript, RunScript, StepScript

SECRET = "restart-webhook-secret"
TOKEN = "ghp_restart"
BODY = {"provider": "github_actions", "task": {"workflow_id": "deploy.yml", "ref": "main"}}


@pytest.fixture
async def sim() -> AsyncIterator[GitHubSimulator]:
    s = GitHubSimulator(
        webhook_secret=SECRET, token=TOKEN, time_scale=0.005, run_creation_delay_s=0.5
    )
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=WRITER) as session:
        yield session


def gateway(tmp_path: Path, sim: GitHubSimulator, **extra: Any) -> Gateway:
    section = {
        "enabled": True,
        "api_url": sim.base_url,
        "token": TOKEN,
        "webhook_secret": SECRET,
        "owner": "octo-org",
        "repo": "octo-repo",
        "poll_min_s": 0.5,
        "poll_max_s": 2,
        **extra,
    }
    gw = Gateway(tmp_path, {"providers": {"github_actions": section}})
    sim.webhook_url = f"{gw.url}/v1/webhooks/github"
    return gw


async def events(http: aiohttp.ClientSession, gw: Gateway, task_id: str) -> list[dict[str, Any]]:
    async with http.get(f"{gw.url}/v1/tasks/{task_id}/events") as resp:
        return list((await resp.json())["events"])


def always_run() -> RunScript:
    """A run a normal cancel does not stop (an ``if: always()`` job)."""
    return RunScript(
        jobs=[
            JobScript("deploy", steps=[StepScript("Deploy", 10_000)]),
            JobScript("notify", steps=[StepScript("Report", 10_000)], always=True),
        ],
        queue_s=0,
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("down_s", [0.0, 2.5])
async def test_a_cancel_deadline_survives_a_restart(
    tmp_path: Path, sim: GitHubSimulator, http: aiohttp.ClientSession, down_s: float
) -> None:
    gw = gateway(tmp_path, sim, cancel_timeout_s=1.5)
    sim.script(always_run())
    await gw.start(http)
    try:
        async with http.post(f"{gw.url}/v1/tasks", json=BODY) as resp:
            task = await resp.json()
        await until(http, gw, task["id"], "running")
        async with http.post(f"{gw.url}/v1/tasks/{task['id']}/cancel") as resp:
            assert resp.status == 202
        gw.kill()  # in the middle of the deadline
        await asyncio.sleep(down_s)
        await gw.start(http)
        up = datetime.now(UTC)
        failed = await until(http, gw, task["id"], "cancel_failed")
        assert failed["reason"] == "upstream did not confirm the cancel within 1.5s"
        got = {e["kind"]: e for e in await events(http, gw, task["id"])}
        waited = at(got["cancel_failed"]["at"]) - at(got["cancel_requested"]["at"])
        assert waited.total_seconds() >= 1.5
        if down_s:  # passed while the gateway was down: acted on at start, not 1.5 s later
            assert (at(got["cancel_failed"]["at"]) - up).total_seconds() < 1.0
        [_] = [e for e in await events(http, gw, task["id"]) if e["kind"] == "cancel_failed"]
        async with http.post(f"{gw.url}/v1/tasks/{task['id']}/cancel?force=true") as resp:
            assert resp.status == 202
        await until(http, gw, task["id"], "cancelled")
    finally:
        await gw.stop()


async def test_a_resubmit_interrupted_by_a_restart_starts_its_attempt_once(
    tmp_path: Path, sim: GitHubSimulator, http: aiohttp.ClientSession
) -> None:
    gw = gateway(tmp_path, sim, queued_timeout_s=0.5, on_stuck="resubmit", max_attempts=3)
    stuck = RunScript(jobs=[JobScript("deploy", steps=[StepScript("Deploy", 1)])], queue_s=10_000)
    sim.script(stuck)  # the first run sits queued; the next one is the quick default run
    await gw.start(http)
    try:
        async with http.post(f"{gw.url}/v1/tasks", json=BODY) as resp:
            task = await resp.json()
        first = (await until(http, gw, task["id"], "queued"))["upstream"]["id"]
        # the new attempt's dispatch fails before it does anything, until the restart
        sim.fail_next(503, match="dispatches", count=1000)
        for _ in range(400):
            kinds = [e["kind"] for e in await events(http, gw, task["id"])]
            if "submit_retry" in kinds:
                break
            await asyncio.sleep(0.05)
        assert "resubmitted" in kinds and "submit_retry" in kinds, kinds
        gw.kill()
        sim.faults.clear()
        await gw.start(http)
        done = await until(http, gw, task["id"], "succeeded")
        assert done["attempt"] == 2 and done["upstream"]["id"] != first
        kinds = [e["kind"] for e in await events(http, gw, task["id"])]
        assert kinds.count("resubmitted") == 1 and kinds.count("stuck") == 1
        # two runs in all: the stuck one (cancelled when replaced) and the new attempt's
        assert len(sim.runs) == 2
        assert sim.runs[int(first)].conclusion == "cancelled"
    finally:
        await gw.stop()
