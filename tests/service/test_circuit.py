"""Circuit breaking toward Nomad, end to end over the HTTP API against the Nomad simulator.

The gateway's breakers run on a clock the test moves by hand (`Circuits(clock=...)`), so
"while open" lasts exactly as long as the test says, however slow the machine: a check
that no request reached the simulator cannot race the open time running out.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import READER, WRITER, make_config, wait_terminal

from egw.providers.circuit import Circuits
from egw.testing.cloudrun import CloudRunSimulator
from egw.testing.cloudrun import JobScript as CloudRunScript
from egw.testing.github import GitHubSimulator, JobScript, RunScript, StepScript
from egw.testing.nomad import NomadSimulator
from egw.web.app import create_app
from egw.web.keys import circuits_key, service_key

JOB = {"image": "busybox:latest", "command": "echo", "args": ["hello"]}


def task(job_id: str) -> dict[str, Any]:
    return {"provider": "nomad", "task": {**JOB, "job_id": job_id}}


class Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sim() -> AsyncIterator[NomadSimulator]:
    s = NomadSimulator(time_scale=0.02)
    await s.start()
    yield s
    await s.close()


async def gateway(
    aiohttp_client: Any, tmp_path: Path, sim: NomadSimulator, clock: Clock, **nomad: Any
) -> Any:
    cfg = make_config(
        tmp_path,
        {
            "providers": {
                "nomad": {
                    "enabled": True,
                    "address": sim.url,
                    "stream_idle_timeout_s": 10,
                    "blocking_wait_s": 2,
                    "stream_retry_s": 30,
                    "log_grace_s": 1,
                    "circuit": {"failures": 3, "open_s": 0.2, "max_open_s": 0.4},
                    **nomad,
                }
            }
        },
    )
    app = create_app(cfg)
    app[circuits_key] = Circuits(clock=clock)
    api = await aiohttp_client(app)
    app[service_key].submit_retry_s = 0.05
    return api


async def circuit(api: Any, provider: str = "nomad") -> dict[str, Any]:
    ready = await api.get("/readyz")
    assert ready.status == 200  # an open breaker leaves the gateway ready
    state: dict[str, Any] = (await ready.json())["providers"][provider]["circuit"]
    return state


async def until_state(api: Any, state: str, provider: str = "nomad") -> dict[str, Any]:
    for _ in range(500):
        now = await circuit(api, provider)
        if now["state"] == state:
            return now
        await asyncio.sleep(0.01)
    raise AssertionError(f"the breaker never got {state}: {now}")


async def gateway_events(api: Any, kinds: int) -> list[dict[str, Any]]:
    for _ in range(300):
        page = await (await api.get("/v1/gateway/events", headers=READER)).json()
        if len(page["events"]) >= kinds:
            return list(page["events"])
        await asyncio.sleep(0.01)
    raise AssertionError(f"not {kinds} gateway events: {page}")


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


async def test_failures_open_the_breaker_a_submit_is_refused_without_a_call_and_launched_once(
    aiohttp_client: Any, tmp_path: Path, sim: NomadSimulator
) -> None:
    clock = Clock()
    api = await gateway(aiohttp_client, tmp_path, sim, clock)
    down = sim.fail(".*", status=500, times=10**6)
    first = await api.post("/v1/tasks", json=task("first"), headers=WRITER)
    assert first.status == 503
    opened = await until_state(api, "open")
    await asyncio.sleep(0.1)  # calls let through before it opened have had their answers
    assert opened["failures"] == 3 and opened["retry_after_s"] == pytest.approx(0.2)
    assert opened["targets"]["default"]["last_error"] == "HTTP 500"

    # refused at once: not one request reaches Nomad, the answer says when to come back
    seen = len(sim.requests)
    resp = await api.post("/v1/tasks", json=task("second"), headers=WRITER)
    body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "circuit_open"
    assert resp.headers["Retry-After"] == "1"  # whole seconds, at least one
    assert body["error"]["details"]["target"] == "default"
    assert len(sim.requests) == seen
    second_id = body["error"]["details"]["task_id"]
    second = await (await api.get(f"/v1/tasks/{second_id}", headers=READER)).json()
    assert second["status"] == "pending"

    # while it stays open the event stream, the pollers and the deferred launches all wait
    await asyncio.sleep(0.6)  # three times open_s in real time; the breakers' clock stands
    assert len(sim.requests) == seen
    metrics = await (await api.get("/metrics")).text()
    assert metric(metrics, "egw_circuit_state", provider="nomad", target="default") == 2
    to_open = {"provider": "nomad", "target": "default", "to": "open"}
    assert metric(metrics, "egw_circuit_transitions_total", **to_open) == 1

    # Nomad recovers; once the open time has passed one probe goes, succeeds, closes it
    down.times = 0
    clock.now += 1
    await until_state(api, "closed")
    listed = (await (await api.get("/v1/tasks", headers=READER)).json())["tasks"]
    assert len(listed) == 2
    for t in listed:
        assert (await wait_terminal(api, t["id"]))["status"] == "succeeded"
    # each launched exactly once: one registration per job, none refused and repeated
    registered = [s for s in sim.requests if s.method in ("POST", "PUT") and s.path == "/v1/jobs"]
    assert len(registered) == 2
    events = await (await api.get(f"/v1/tasks/{second_id}/events", headers=READER)).json()
    kinds = [e["kind"] for e in events["events"]]
    assert kinds.count("submit_deferred") == 1 and "submit_retry" not in kinds

    moves = await gateway_events(api, 3)
    assert [(e["kind"], e["provider"], e["target"]) for e in moves] == [
        ("circuit_open", "nomad", "default"),
        ("circuit_half_open", "nomad", "default"),
        ("circuit_closed", "nomad", "default"),
    ]
    assert moves[0]["data"] == {"from": "closed", "failures": 3, "open_s": 0.2}
    metrics = await (await api.get("/metrics")).text()
    assert metric(metrics, "egw_circuit_state", provider="nomad", target="default") == 0


async def test_a_failed_probe_opens_it_again_for_longer(
    aiohttp_client: Any, tmp_path: Path, sim: NomadSimulator
) -> None:
    clock = Clock()
    api = await gateway(aiohttp_client, tmp_path, sim, clock)
    down = sim.fail(".*", status=503, times=10**6)
    resp = await api.post("/v1/tasks", json=task("later"), headers=WRITER)
    assert resp.status == 503
    await until_state(api, "open")
    seen = len(sim.requests)
    clock.now += 0.2
    for _ in range(500):  # the deferred launch (or the stream) probes, and fails
        state = await circuit(api)
        if state["state"] == "open" and state["retry_after_s"] > 0.2:
            break
        await asyncio.sleep(0.01)
    assert state["retry_after_s"] == pytest.approx(0.4)  # twice open_s, at max_open_s
    assert len(sim.requests) == seen + 1  # the probe, alone
    down.times = 0
    clock.now += 0.4
    listed = (await (await api.get("/v1/tasks", headers=READER)).json())["tasks"]
    assert (await wait_terminal(api, listed[0]["id"]))["status"] == "succeeded"


async def test_refused_connections_and_timeouts_open_it_a_4xx_does_not(
    aiohttp_client: Any, tmp_path: Path, sim: NomadSimulator
) -> None:
    clock = Clock()
    api = await gateway(aiohttp_client, tmp_path, sim, clock, request_timeout_s=0.3)
    # a 4xx is the upstream answering: a bad job fails its task, never the breaker
    sim.fail("^/v1/jobs$", status=400, body="bad job", times=5)
    for i in range(5):
        resp = await api.post("/v1/tasks", json=task(f"bad-{i}"), headers=WRITER)
        assert resp.status == 502 and "bad job" in (await resp.json())["error"]["message"]
    assert (await circuit(api))["state"] == "closed"
    assert (await circuit(api))["failures"] == 0
    # nor does a rate limit: Nomad answers, with its own wait (retried by the policy)
    limited = sim.fail("^/v1/jobs$", status=429, body="rate limited", times=10)
    resp = await api.post("/v1/tasks", json=task("limited"), headers=WRITER)
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "provider_unavailable"
    assert limited.times < 10  # they reached Nomad
    assert (await circuit(api))["state"] == "closed"
    assert (await circuit(api))["failures"] == 0
    limited.times = 0

    # calls that hang past request_timeout_s count as failures
    gate = sim.hold("^/v1/job/", times=10**6)
    resp = await api.post("/v1/tasks", json=task("hangs"), headers=WRITER)
    assert resp.status == 503
    state = await until_state(api, "open")
    assert "timed out" in state["targets"]["default"]["last_error"]
    gate.set()
    for fault in sim.faults:
        fault.times = 0

    # the agent goes down: connecting is refused
    clock.now += 1  # past the open time: the next call probes
    await sim.go_down()
    for _ in range(500):
        state = await circuit(api)
        if state["state"] == "open" and "Connect" in state["targets"]["default"]["last_error"]:
            break
        await asyncio.sleep(0.01)
    assert state["state"] == "open"
    await sim.come_back()
    clock.now += 1
    await until_state(api, "closed")


async def test_a_restart_forgets_an_open_breaker_and_launches_the_pending_task_once(
    aiohttp_client: Any, tmp_path: Path, sim: NomadSimulator
) -> None:
    """The state is in memory: a new gateway starts closed, and its start launches what
    the breaker kept pending (or finds out again, and opens again, if Nomad is still down)."""
    clock = Clock()
    api = await gateway(aiohttp_client, tmp_path, sim, clock)
    down = sim.fail(".*", status=500, times=10**6)
    assert (await api.post("/v1/tasks", json=task("warm"), headers=WRITER)).status == 503
    await until_state(api, "open")
    resp = await api.post("/v1/tasks", json=task("kept"), headers=WRITER)
    kept = (await resp.json())["error"]["details"]["task_id"]
    assert resp.status == 503
    await api.close()
    down.times = 0
    again = await gateway(aiohttp_client, tmp_path, sim, Clock())
    assert (await circuit(again))["state"] == "closed"
    assert (await wait_terminal(again, kept))["status"] == "succeeded"
    registered = [s for s in sim.requests if s.path == "/v1/jobs" and s.method != "GET"]
    assert len(registered) == 2  # "warm" and "kept", once each


async def test_cloud_run_pollers_and_log_readers_sleep_while_it_is_open(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    sim = CloudRunSimulator(token="sim-token", time_scale=0.01)
    sim.add_job("my-project", "asia-east1", "my-job", script=CloudRunScript(duration_s=100))
    await sim.start()
    try:
        clock = Clock()
        cfg = make_config(
            tmp_path,
            {
                "providers": {
                    "cloud_run": {
                        "enabled": True,
                        "run_api_url": sim.url,
                        "logging_api_url": sim.url,
                        "access_token": "sim-token",
                        "poll_min_s": 0.02,
                        "poll_max_s": 0.1,
                        "logging_settle_s": 0.01,
                        "logging_reads_per_minute": 6000,
                        "circuit": {"failures": 3, "open_s": 0.2, "max_open_s": 0.4},
                    }
                }
            },
        )
        app = create_app(cfg)
        app[circuits_key] = Circuits(clock=clock)
        api = await aiohttp_client(app)
        body = {
            "provider": "cloud_run",
            "task": {"project": "my-project", "region": "asia-east1", "job": "my-job"},
        }
        resp = await api.post("/v1/tasks", json=body, headers=WRITER)
        assert resp.status == 202
        task_id = (await resp.json())["id"]
        outage = sim.fail("*", 503, times=10**6)
        opened = await until_state(api, "open", "cloud_run")
        assert set(opened["targets"]) == {sim.url.split("//")[1]}  # one Google API host here
        await asyncio.sleep(0.1)  # calls let through before it opened have had their answers
        seen = len(sim.requests)
        await asyncio.sleep(0.5)
        assert len(sim.requests) == seen  # neither the poller nor the log reader asked
        outage.times = 0
        clock.now += 1
        done = await wait_terminal(api, task_id)
        assert done["status"] == "succeeded"
        assert (await circuit(api, "cloud_run"))["state"] == "closed"
        assert sim.count("run") == 1
    finally:
        await sim.close()


async def test_github_connection_drops_open_it_and_the_reconciler_waits(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    sim = GitHubSimulator(webhook_secret="circuit-secret", token="ghp_c", time_scale=0.005)
    await sim.start()
    try:
        clock = Clock()
        cfg = make_config(
            tmp_path,
            {
                "providers": {
                    "github_actions": {
                        "enabled": True,
                        "api_url": sim.base_url,
                        "token": "ghp_c",
                        "webhook_secret": "circuit-secret",
                        "owner": "o",
                        "repo": "r",
                        "poll_min_s": 0.02,
                        "poll_max_s": 0.05,
                        "circuit": {"failures": 3, "open_s": 0.2, "max_open_s": 0.4},
                    }
                }
            },
        )
        app = create_app(cfg)
        app[circuits_key] = Circuits(clock=clock)
        api = await aiohttp_client(app)
        sim.webhook_url = str(api.make_url("/v1/webhooks/github"))
        sim.drop(count=1000)  # no webhook arrives: the reconciler's polls are all egw hears
        sim.script(RunScript(queue_s=0, jobs=[JobScript(steps=[StepScript("s", 100)])]))
        body = {"provider": "github_actions", "task": {"workflow_id": "ci.yml", "ref": "main"}}
        resp = await api.post("/v1/tasks", json=body, headers=WRITER)
        assert resp.status == 202, await resp.text()
        task_id = (await resp.json())["id"]
        sim.drop_connection_next(after_effect=False, count=10**6)
        opened = await until_state(api, "open", "github_actions")
        assert "Server" in opened["targets"][sim.base_url.split("//")[1]]["last_error"]
        await asyncio.sleep(0.1)  # calls let through before it opened have had their answers
        seen = len(sim.requests)
        await asyncio.sleep(0.5)  # ten poll intervals
        assert len(sim.requests) == seen  # the reconciler waits for the breaker
        sim.faults.clear()
        clock.now += 1
        done = await wait_terminal(api, task_id)
        assert done["status"] == "succeeded"
        assert (await circuit(api, "github_actions"))["state"] == "closed"
    finally:
        await sim.close()
