"""Namespaces against the simulators: what a namespace's limits refuse (a Nomad namespace, a
GitHub repository or workflow, a Cloud Run project, region or job) is a 403 before one
request reaches the upstream, counted on the simulator; and a signed webhook delivery is
applied to its task whatever the namespace, while a token of another namespace learns
nothing of it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import make_config, sse_frames_for

from egw.testing.cloudrun import CloudRunSimulator
from egw.testing.github import GitHubSimulator
from egw.testing.nomad import NomadSimulator
from egw.web.app import create_app

Client = TestClient[web.Request, web.Application]
A = {"Authorization": "Bearer team-a-token-0123456789"}
B = {"Authorization": "Bearer team-b-token-0123456789"}
SECRET = "ns-webhook-secret"
GH_TOKEN = "ghp_ns"
CR_TOKEN = "cr-ns-token"


@pytest.fixture
async def sims() -> AsyncIterator[tuple[NomadSimulator, GitHubSimulator, CloudRunSimulator]]:
    nomad = NomadSimulator(time_scale=0.02)
    github = GitHubSimulator(
        webhook_secret=SECRET, token=GH_TOKEN, time_scale=0.005, run_creation_delay_s=0.2
    )
    cloudrun = CloudRunSimulator(token=CR_TOKEN, time_scale=0.01, seed=3)
    for sim in (nomad, github, cloudrun):
        await sim.start()
    cloudrun.add_job("proj-a", "asia-east1", "job-a")
    cloudrun.add_job("proj-a", "asia-east1", "job-b")
    yield nomad, github, cloudrun
    for sim in (nomad, github, cloudrun):
        await sim.close()


async def gateway(
    tmp_path: Path, sims: tuple[NomadSimulator, GitHubSimulator, CloudRunSimulator], client: Any
) -> Client:
    nomad, github, cloudrun = sims
    cfg = make_config(
        tmp_path,
        {
            "providers": {
                "nomad": {"enabled": True, "address": nomad.url, "blocking_wait_s": 5},
                "github_actions": {
                    "enabled": True,
                    "api_url": github.base_url,
                    "token": GH_TOKEN,
                    "webhook_secret": SECRET,
                    "poll_min_s": 30,
                    "poll_max_s": 60,
                },
                "cloud_run": {
                    "enabled": True,
                    "run_api_url": cloudrun.url,
                    "logging_api_url": cloudrun.url,
                    "access_token": CR_TOKEN,
                    "poll_min_s": 0.02,
                    "poll_max_s": 0.1,
                },
            },
            "namespaces": {
                "team-a": {
                    "providers": {
                        "nomad": {"namespaces": ["team-a"]},
                        "github_actions": {
                            "repositories": ["Octo-Org/app"],
                            "workflows": ["deploy.yml"],
                        },
                        "cloud_run": {
                            "projects": ["proj-a"],
                            "regions": ["asia-east1"],
                            "jobs": ["job-a"],
                        },
                    }
                },
                "team-b": {"providers": {"github_actions": {"repositories": ["octo-org/other"]}}},
            },
            "auth": {
                "tokens": [
                    {"name": "a", "token": A["Authorization"][7:], "namespaces": ["team-a"]},
                    {"name": "b", "token": B["Authorization"][7:], "namespaces": ["team-b"]},
                ]
            },
        },
    )
    api: Client = await client(create_app(cfg))
    github.webhook_url = str(api.make_url("/v1/webhooks/github"))
    return api


NOMAD = {"job_id": "ns-job", "image": "busybox:latest", "command": "echo", "args": ["hi"]}
GITHUB = {"owner": "octo-org", "repo": "app", "workflow_id": "deploy.yml", "ref": "main"}
CLOUD_RUN = {"project": "proj-a", "region": "asia-east1", "job": "job-a"}


async def test_limits_refuse_before_the_upstream_is_called(
    tmp_path: Path,
    sims: tuple[NomadSimulator, GitHubSimulator, CloudRunSimulator],
    aiohttp_client: Callable[..., Any],
) -> None:
    nomad, github, cloudrun = sims
    api = await gateway(tmp_path, sims, aiohttp_client)

    def calls() -> tuple[int, int, int]:
        cr = sum(1 for op, _ in cloudrun.requests if op != "token")
        # (Nomad's event stream is the provider's standing watch, opened in the background
        # at start, on a slower store after this count began: no task's request)
        nomad_calls = sum(1 for r in nomad.requests if r.path != "/v1/event/stream")
        return nomad_calls, len(github.requests), cr

    denied = [
        (A, "nomad", {**NOMAD, "namespace": "team-b"}),
        (A, "nomad", {"job": {**_job(), "Namespace": "default"}}),
        (A, "github_actions", {**GITHUB, "repo": "other"}),
        (A, "github_actions", {**GITHUB, "owner": "evil-org"}),
        (A, "github_actions", {**GITHUB, "workflow_id": "release.yml"}),
        (A, "cloud_run", {**CLOUD_RUN, "job": "job-b"}),
        (A, "cloud_run", {**CLOUD_RUN, "project": "proj-b"}),
        (A, "cloud_run", {**CLOUD_RUN, "region": "europe-west1"}),
        (A, "local", {"command": "true"}),  # team-a's providers leave out the local runner
        (B, "nomad", NOMAD),  # team-b may use GitHub only
        (B, "github_actions", GITHUB),  # the repository is team-a's
    ]
    before = calls()
    for who, provider, task in denied:
        resp = await api.post("/v1/tasks", json={"provider": provider, "task": task}, headers=who)
        assert resp.status == 403, (provider, task, await resp.text())
    assert calls() == before  # not one request reached an upstream
    for who in (A, B):  # and nothing was recorded
        assert (await (await api.get("/v1/tasks", headers=who)).json())["tasks"] == []

    allowed = [
        ("nomad", {**NOMAD, "namespace": "team-a"}),
        ("github_actions", {**GITHUB, "owner": "OCTO-ORG"}),  # GitHub names ignore case
        ("cloud_run", CLOUD_RUN),
    ]
    for i, (provider, task) in enumerate(allowed):
        resp = await api.post("/v1/tasks", json={"provider": provider, "task": task}, headers=A)
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["namespace"] == "team-a"
        assert calls()[i] > before[i]  # this one did go upstream


def _job() -> dict[str, Any]:
    return {
        "ID": "ns-raw",
        "TaskGroups": [
            {"Name": "g", "Tasks": [{"Name": "t", "Driver": "docker", "Config": {"image": "x"}}]}
        ],
    }


async def test_webhooks_apply_whatever_the_namespace_and_tell_no_other_team(
    tmp_path: Path,
    sims: tuple[NomadSimulator, GitHubSimulator, CloudRunSimulator],
    aiohttp_client: Callable[..., Any],
) -> None:
    api = await gateway(tmp_path, sims, aiohttp_client)
    sse = {"Accept": "text/event-stream"}
    async with api.get("/v1/events", headers={**A, **sse}) as a_live:
        resp = await api.post(
            "/v1/tasks",
            json={"provider": "github_actions", "task": {**GITHUB, "repo": "other"}},
            headers=B,
        )
        assert resp.status == 202, await resp.text()
        task = await resp.json()
        assert task["namespace"] == "team-b"
        # the run's webhooks move B's task to its end (no token is involved)
        index = 0
        for _ in range(100):
            got = await api.get(f"/v1/tasks/{task['id']}?index={index}&wait=5s", headers=B)
            current = await got.json()
            if current["status"] in ("succeeded", "failed"):
                break
            index = current["index"]
        assert current["status"] == "succeeded"
        sources = {
            e["source"]
            for e in (await (await api.get(f"/v1/tasks/{task['id']}/events", headers=B)).json())[
                "events"
            ]
        }
        assert "github_actions" in sources
        frames = await sse_frames_for(a_live, 0.5)
    # team-a's live stream carried nothing of it, nor does its replay or a read
    assert not [f for f in frames if f.get("event") == "status"]
    async with api.get("/v1/events?after=0", headers={**A, **sse}) as replay:
        frames = await sse_frames_for(replay, 0.5)
    assert all(task["id"] not in json.dumps(f) for f in frames)
    assert (await api.get(f"/v1/tasks/{task['id']}", headers=A)).status == 404
