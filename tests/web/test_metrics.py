"""GET /metrics after a scripted session: each metric moved as it should."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit_local, wait_terminal

from egw.web.app import create_app


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in the exposition text (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        assert m, line
        if m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return 0.0


async def scrape(api: TestClient[web.Request, web.Application]) -> str:
    resp = await api.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return await resp.text()


async def test_metrics_follow_a_session(api: TestClient[web.Request, web.Application]) -> None:
    before = await scrape(api)
    ok = await submit_local(api, "echo", "hello")
    bad = await submit_local(api, "false")
    await wait_terminal(api, ok["id"])
    await wait_terminal(api, bad["id"])
    async with api.get(
        f"/v1/tasks/{ok['id']}/logs", headers={**WRITER, "Accept": "text/event-stream"}
    ) as r:
        await r.read()
    await api.get("/v1/tasks/t_nope", headers=WRITER)
    after = await scrape(api)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("egw_tasks_submitted_total", provider="local") == 2
    assert moved("egw_tasks_finished_total", provider="local", outcome="succeeded") == 1
    assert moved("egw_tasks_finished_total", provider="local", outcome="failed") == 1
    assert sample(after, "egw_tasks", provider="local", status="succeeded") == 1
    assert moved("egw_http_requests_total", method="POST", route="/v1/tasks", status="202") == 2
    assert moved("egw_http_requests_total", method="GET", route="/v1/tasks/{id}", status="404") == 1
    assert (
        moved("egw_http_requests_total", method="GET", route="/v1/tasks/{id}/logs", status="200")
        == 1
    )
    assert moved("egw_http_requests_total", method="GET", route="unmatched", status="404") == 0
    assert moved("egw_eventlog_appends_total") >= 6
    assert moved("egw_log_bytes_total", provider="local") == len("hello\n")
    assert sample(after, "egw_eventlog_write_batch_size_count") > 0
    assert sample(after, "egw_sse_connections") == 0
    assert not re.search(r"t_[0-9a-f]{32}", after)  # no task ids in labels


async def test_metrics_can_require_a_token_or_be_off(aiohttp_client: Any, tmp_path: Path) -> None:
    guarded = await aiohttp_client(
        create_app(make_config(tmp_path / "a", {"metrics": {"require_token": True}}))
    )
    assert (await guarded.get("/metrics")).status == 401
    assert (await guarded.get("/metrics", headers=WRITER)).status == 200
    off = await aiohttp_client(
        create_app(make_config(tmp_path / "b", {"metrics": {"enabled": False}}))
    )
    assert (await off.get("/metrics")).status == 404


async def test_metrics_after_webhooks_and_a_failed_upstream_call(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    from egw.testing.github import GitHubSimulator

    sim = GitHubSimulator(webhook_secret="metrics-secret", token="ghp_m", time_scale=0.005)
    await sim.start()
    try:
        cfg = make_config(
            tmp_path,
            {
                "providers": {
                    "github_actions": {
                        "enabled": True,
                        "api_url": sim.base_url,
                        "token": "ghp_m",
                        "webhook_secret": "metrics-secret",
                        "owner": "o",
                        "repo": "r",
                        "poll_min_s": 30,
                        "poll_max_s": 60,
                    }
                }
            },
        )
        api = await aiohttp_client(create_app(cfg))
        sim.webhook_url = str(api.make_url("/v1/webhooks/github"))
        before = await scrape(api)
        sim.fail_next(502, match="/dispatches")  # one failed upstream call, then a retry
        body = {"provider": "github_actions", "task": {"workflow_id": "ci.yml", "ref": "main"}}
        resp = await api.post("/v1/tasks", json=body, headers=WRITER)
        assert resp.status == 202, await resp.text()
        done = await wait_terminal(api, (await resp.json())["id"])
        assert done["status"] == "succeeded"
        bad = await api.post(
            "/v1/webhooks/github",
            data=b"{}",
            headers={
                "X-GitHub-Event": "ping",
                "X-GitHub-Delivery": "d-1",
                "Content-Type": "application/json",
                "X-Hub-Signature-256": "sha256=" + "0" * 64,
            },
        )
        assert bad.status == 401
        after = await scrape(api)
    finally:
        await sim.close()

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert (
        moved(
            "egw_upstream_requests_total",
            provider="github_actions",
            operation="dispatch",
            outcome="server_error",
        )
        == 1
    )
    # after an ambiguous failure the attempt looks for the run before dispatching again
    assert (
        moved(
            "egw_upstream_requests_total",
            provider="github_actions",
            operation="dispatch",
            outcome="ok",
        )
        >= 1
    )
    assert moved("egw_upstream_retries_total", provider="github_actions", operation="dispatch") == 1
    # every delivery of the run is counted once; one that arrives before the dispatched run's
    # id is recorded (a race the simulator's speed decides) is counted as ignored, not accepted
    accepted = moved("egw_webhook_deliveries_total", source="github", result="accepted")
    ignored = moved("egw_webhook_deliveries_total", source="github", result="ignored")
    assert accepted >= 1 and accepted + ignored >= 3
    assert moved("egw_webhook_deliveries_total", source="github", result="bad_signature") == 1
    assert moved("egw_tasks_finished_total", provider="github_actions", outcome="succeeded") == 1
    assert (
        sample(
            after, "egw_provider_health", provider="github_actions", figure="rate_limit.remaining"
        )
        > 0
    )


async def test_request_latency_is_a_prometheus_histogram(
    api: TestClient[web.Request, web.Application],
) -> None:
    """Counted without prometheus-client's locks, exposed through its collector API: the
    buckets are cumulative, end at +Inf, and agree with the request counter."""
    for _ in range(3):
        await api.get("/v1/tasks/t_nope", headers=WRITER)
    await api.get("/no/such/route")
    await api.patch("/healthz")
    text = await scrape(api)
    labels = {"method": "GET", "route": "/v1/tasks/{id}"}
    les = [
        re.search(r'le="([^"]+)"', line).group(1)  # type: ignore[union-attr]
        for line in text.splitlines()
        if line.startswith("egw_http_request_duration_seconds_bucket{")
        and 'route="/v1/tasks/{id}"' in line
        and 'method="GET"' in line
    ]
    assert les and les[-1] == "+Inf" and les[0] == "0.001"
    counts = [
        sample(text, "egw_http_request_duration_seconds_bucket", **labels, le=le) for le in les
    ]
    assert counts == sorted(counts) and counts[-1] == 3
    assert sample(text, "egw_http_request_duration_seconds_count", **labels) == 3
    assert 0 < sample(text, "egw_http_request_duration_seconds_sum", **labels) < 30
    assert sample(text, "egw_http_requests_total", **labels, status="404") == 3
    # what no route takes is counted under one label, never under its raw path
    assert (
        sample(text, "egw_http_requests_total", method="GET", route="unmatched", status="404") == 1
    )
    assert (
        sample(text, "egw_http_requests_total", method="PATCH", route="unmatched", status="405")
        == 1
    )
    assert "/no/such/route" not in text
