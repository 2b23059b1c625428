"""GitHub Actions across `egw serve` replicas on one PostgreSQL database (ARCHITECTURE.md,
"Replicas"): the simulator's webhooks spread round-robin over three replicas (as a load
balancer in front of them would), runs dispatched on every replica, and the holder of the
reconciler's lease killed with SIGKILL in the middle. Every delivery a replica
acknowledged is recorded exactly once, each run's moves are recorded once, and each
job's log and each progress line is in the task's log exactly once. Skipped, saying so,
without a PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from db_support import skip_reason
from reliability.faultkit import Gateway, until
from reliability.replicas_kit import LEASE_S, by_id, replicas
from reliability.replicas_kit import holder as lease_holder
from support import WRITER

from egw.testing.github import GitHubSimulator, JobScript, RunScript, StepScript

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

LEASE = "github-reconciler"
SECRET = "replicas-webhook-secret"
TOKEN = "ghp_replicas"
RUNS = 9


class Spreader:
    """A round-robin load balancer for GitHub's deliveries: each goes to the next replica
    that answers (a dead one is skipped, as a proxy's health check would)."""

    def __init__(self, gws: list[Gateway]) -> None:
        self.gws = gws
        self.turn = 0
        self.acked: dict[str, str] = {}  # delivery id -> the replica that took it

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-")}
        headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        for _ in range(len(self.gws)):
            gw = self.gws[self.turn % len(self.gws)]
            self.turn += 1
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                    http.post(f"{gw.url}/v1/webhooks/github", data=body, headers=headers) as resp,
                ):
                    answer = await resp.read()
                    # taken (200), or held until its run is known (202 and "held")
                    if resp.status == 200 or (
                        resp.status == 202 and json.loads(answer).get("held")
                    ):
                        self.acked[headers["X-GitHub-Delivery"]] = gw.url
                    return web.Response(status=resp.status, body=answer)
            except (aiohttp.ClientError, TimeoutError):
                continue  # down (or killed mid-answer): the next replica
        return web.Response(status=502)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=WRITER) as session:
        yield session


@pytest.fixture
async def sim() -> AsyncIterator[GitHubSimulator]:
    s = GitHubSimulator(webhook_secret=SECRET, token=TOKEN, time_scale=0.25)
    await s.start()
    yield s
    await s.close()


@dataclass
class Cluster:
    gws: list[Gateway]
    spreader: Spreader


@pytest.fixture
async def cluster(
    tmp_path: Path, sim: GitHubSimulator, http: aiohttp.ClientSession, aiohttp_server: Any
) -> AsyncIterator[Cluster]:
    github = {
        "enabled": True,
        "api_url": sim.base_url,
        "token": TOKEN,
        "webhook_secret": SECRET,
        "owner": "octo-org",
        "repo": "octo-repo",
        "poll_min_s": 0.5,
        "poll_max_s": 2,
    }
    async with replicas(tmp_path, http, {"github_actions": github}) as made:
        spreader = Spreader(made)
        app = web.Application()
        app.router.add_post("/v1/webhooks/github", spreader.hook)
        server = await aiohttp_server(app)
        sim.webhook_url = str(server.make_url("/v1/webhooks/github"))
        yield Cluster(made, spreader)


async def holder(http: aiohttp.ClientSession, gw: Gateway) -> str | None:
    return await lease_holder(http, gw, LEASE)


async def submit(http: aiohttp.ClientSession, gw: Gateway, n: int) -> str:
    task = {"workflow_id": "deploy.yml", "ref": "main", "inputs": {"env": f"e{n}"}}
    async with http.post(
        f"{gw.url}/v1/tasks", json={"provider": "github_actions", "task": task}
    ) as resp:
        assert resp.status == 202, await resp.text()
        task_id: str = (await resp.json())["id"]
        return task_id


def script() -> RunScript:
    """Two jobs of three steps each: a dozen deliveries per run, spread over seconds."""
    return RunScript(
        jobs=[
            JobScript(
                name,
                steps=[StepScript(f"{name}-{i}", 1.5, output=f"{name} step {i}") for i in range(3)],
            )
            for name in ("build", "test")
        ]
    )


async def test_a_webhook_storm_over_replicas_and_a_killed_holder_lose_and_double_nothing(
    cluster: Cluster, sim: GitHubSimulator, http: aiohttp.ClientSession
) -> None:
    gws, spreader = cluster.gws, cluster.spreader
    ids = await by_id(http, gws)
    deadline = time.monotonic() + 10
    while (first := await holder(http, gws[0])) is None:
        assert time.monotonic() < deadline, "no replica took the reconciler's lease"
        await asyncio.sleep(0.05)
    for _ in range(RUNS):
        sim.script(script())
    tasks = [await submit(http, gws[i % 3], i) for i in range(RUNS)]
    for task_id in tasks:
        await until(http, gws[0], task_id, "running", limit_s=20)
    dead = ids[str(first)]
    dead.kill()  # mid-run: jobs still running, deliveries still coming
    killed = time.monotonic()
    alive = [gw for gw in gws if gw is not dead]
    while (now := await holder(http, alive[0])) in (None, first):
        assert time.monotonic() - killed < LEASE_S + 1.5, "the lease was not taken over"
        await asyncio.sleep(0.05)
    took = time.monotonic() - killed
    # a run dispatched after the takeover on a replica that does not hold the lease
    other = next(gw for gw in alive if gw is not ids[str(now)])
    sim.script(script())
    tasks.append(await submit(http, other, RUNS))
    for task_id in tasks:
        await until(http, alive[0], task_id, "succeeded", limit_s=40)
    await sim.deliveries_idle()
    recorded: Counter[str] = Counter()
    for task_id in tasks:
        async with http.get(f"{alive[0].url}/v1/tasks/{task_id}/events") as resp:
            events = (await resp.json())["events"]
        for e in events:
            if e["kind"] == "github.delivery":
                recorded[e["data"]["delivery_id"]] += 1
        moves = Counter(e["status"] for e in events if e["kind"] == "observed" and e["applied"])
        assert moves["succeeded"] == 1 and set(moves.values()) == {1}, (task_id, moves)
        deadline = time.monotonic() + 20
        while True:  # the log ends once every job's log is in
            async with http.get(f"{alive[0].url}/v1/tasks/{task_id}/logs") as resp:
                text = await resp.text()
                if resp.headers["X-Egw-Complete"] == "true":
                    break
            assert time.monotonic() < deadline, f"{task_id}: its log never completed"
            await asyncio.sleep(0.1)
        progress = [line for line in text.splitlines() if line.startswith("[github] ")]
        assert len(progress) == len(set(progress)), (task_id, text)  # none written twice
        for job in ("build", "test"):
            assert text.count(f"----- log of job {job} ") == 1, (task_id, text)
            for i in range(3):
                assert text.count(f"{job} step {i}") == 1, (task_id, text)
    # every delivery a replica acknowledged is recorded once, and only those of egw's runs
    about_runs = {d.guid for d in sim.deliveries if d.run_id is not None}
    acked = set(spreader.acked) & about_runs
    assert acked and len(acked) >= RUNS * 6, len(acked)
    assert set(recorded) == acked, (acked - set(recorded), set(recorded) - acked)
    assert set(recorded.values()) == {1}
    assert len({spreader.acked[g] for g in acked}) == 3  # spread over every replica
    print(f"{len(acked)} deliveries over 3 replicas; lease taken over {took:.2f} s after the kill")
