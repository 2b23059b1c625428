"""Namespaces over HTTP: a token of team-a never sees, tails, waits on, cancels or reruns a
task of team-b (every read route, both event streams with and without ``Last-Event-ID``,
another token's cursors, blocking queries), a task outside the caller's namespaces is a 404
exactly like a missing one, and a submit that a grant or a namespace's limits refuse is a
403 with nothing recorded or started."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import (
    ADMIN_TOKEN,
    READER_TOKEN,
    WRITER,
    WRITER_TOKEN,
    make_config,
    sse_frames,
    sse_frames_for,
    wait_status,
    wait_terminal,
)

from egw.web.app import create_app

Client = TestClient[web.Request, web.Application]

A = {"Authorization": "Bearer team-a-token-0123456789"}
B = {"Authorization": "Bearer team-b-token-0123456789"}
#: reads every namespace, acts in none
AUDIT = {"Authorization": "Bearer audit-token-0123456789"}
#: reads and submits in team-a, may not cancel there
A_NO_CANCEL = {"Authorization": "Bearer a-nocancel-token-0123456"}
OPS_TOKEN = "ops-token-0123456789ab"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
READER_HEADERS = {"Authorization": f"Bearer {READER_TOKEN}"}
#: every action, in team-b and default only
OTHER_OPS = {"Authorization": "Bearer other-ops-token-012345678"}
RW = ["tasks:read", "tasks:write"]


def two_teams(tmp_path: Path) -> Any:
    return make_config(
        tmp_path,
        {
            "providers": {"local": {"allowed_commands": ["sh", "true", "echo"]}},
            "namespaces": {
                "team-a": {},
                "team-b": {"providers": {"local": {"allowed_commands": ["sh", "true"]}}},
            },
            "auth": {
                "tokens": [
                    {"name": "writer", "token": WRITER_TOKEN, "scopes": RW},
                    {"name": "reader", "token": READER_TOKEN, "scopes": ["tasks:read"]},
                    {"name": "admin", "token": ADMIN_TOKEN, "scopes": ["admin"]},
                    {"name": "a", "token": A["Authorization"][7:], "namespaces": ["team-a"]},
                    {"name": "b", "token": B["Authorization"][7:], "namespaces": ["team-b"]},
                    {
                        "name": "audit",
                        "token": AUDIT["Authorization"][7:],
                        "scopes": ["tasks:read"],
                        "namespaces": [{"name": "*", "actions": ["read"]}],
                    },
                    {
                        "name": "a-nocancel",
                        "token": A_NO_CANCEL["Authorization"][7:],
                        "namespaces": [{"name": "team-a", "actions": ["read", "write"]}],
                    },
                    {
                        "name": "ops",
                        "token": OPS["Authorization"][7:],
                        "scopes": ["admin"],
                        "namespaces": "*",
                    },
                    {
                        "name": "other-ops",
                        "token": OTHER_OPS["Authorization"][7:],
                        "scopes": ["admin"],
                        "namespaces": ["team-b", "default"],
                    },
                ]
            },
        },
    )


@pytest.fixture
async def teams(tmp_path: Path, aiohttp_client: Callable[..., Any]) -> AsyncIterator[Client]:
    client: Client = await aiohttp_client(create_app(two_teams(tmp_path)))
    yield client


async def run(api: Client, who: dict[str, str], *argv: str, **extra: Any) -> dict[str, Any]:
    body = {"provider": "local", "task": {"command": argv[0], "args": list(argv[1:])}, **extra}
    resp = await api.post("/v1/tasks", json=body, headers=who)
    assert resp.status == 202, await resp.text()
    task: dict[str, Any] = await resp.json()
    return task


async def not_found(resp: Any, task_id: str) -> None:
    """The answer a task that never existed gets: nothing tells the two apart."""
    assert resp.status == 404, await resp.text()
    body = await resp.json()
    assert body["error"] == {
        "code": "not_found",
        "message": f"no task {task_id}",
        "details": {"task_id": task_id},
    }


def ids_in(payload: Any) -> set[str]:
    """Every task id anywhere in a JSON value."""
    text = json.dumps(payload)
    return {part[:34] for part in text.split('"')[1:] if part.startswith("t_")}


# --- the namespace of a submit ---------------------------------------------------------------


async def test_namespace_of_a_submit(teams: Client) -> None:
    mine = await run(teams, A, "true")
    assert mine["namespace"] == "team-a"  # the token's only namespace
    assert (await run(teams, WRITER, "true"))["namespace"] == "default"  # no namespaces: default
    assert (await run(teams, OPS, "true"))["namespace"] == "default"  # every namespace: default
    assert (await run(teams, OPS, "true", namespace="team-b"))["namespace"] == "team-b"
    for who, ns in ((A, "team-b"), (A, "default"), (WRITER, "team-a")):
        body = {"provider": "local", "task": {"command": "true"}, "namespace": ns}
        resp = await teams.post("/v1/tasks", json=body, headers=who)
        assert resp.status == 403, await resp.text()
        assert (await resp.json())["error"]["details"]["namespace"] == ns
    bad = await teams.post(
        "/v1/tasks",
        json={"provider": "local", "task": {"command": "true"}, "namespace": "Team_A"},
        headers=OPS,
    )
    assert bad.status == 400 and (await bad.json())["error"]["details"]["field"] == "namespace"
    undeclared = await teams.post(
        "/v1/tasks",
        json={"provider": "local", "task": {"command": "true"}, "namespace": "team-z"},
        headers=OPS,
    )
    assert undeclared.status == 403
    got = await teams.get(f"/v1/tasks/{mine['id']}", headers=A)
    assert (await got.json())["namespace"] == "team-a"


# --- reads -----------------------------------------------------------------------------------


async def test_every_read_of_another_namespace_is_not_found(teams: Client) -> None:
    theirs = await run(teams, A, "sh", "-c", "echo secret-of-a")
    await wait_status_as(teams, A, theirs["id"], "succeeded")
    tid = theirs["id"]
    for who in (B, WRITER, READER_HEADERS):
        for path in (
            f"/v1/tasks/{tid}",
            f"/v1/tasks/{tid}/status",
            f"/v1/tasks/{tid}?index=0&wait=5s",
            f"/v1/tasks/{tid}/logs",
            f"/v1/tasks/{tid}/logs?follow=1",
            f"/v1/tasks/{tid}/events",
            f"/v1/tasks/{tid}/events?follow=1",
        ):
            started = time.monotonic()
            await not_found(await teams.get(path, headers=who), tid)
            assert time.monotonic() - started < 2  # a blocking query does not wait either
        for headers in ({"Accept": "text/event-stream"}, {"If-None-Match": "*"}):
            await not_found(
                await teams.get(f"/v1/tasks/{tid}/logs", headers={**who, **headers}), tid
            )
        head = await teams.head(f"/v1/tasks/{tid}/logs", headers=who)
        assert head.status == 404
    # the owners and the auditor see it
    for who in (A, AUDIT, OPS):
        resp = await teams.get(f"/v1/tasks/{tid}/logs", headers=who)
        assert resp.status == 200 and await resp.text() == "secret-of-a\n"


async def test_blocking_query_of_another_namespace_answers_at_once(teams: Client) -> None:
    theirs = await run(teams, A, "sh", "-c", "sleep 30")
    started = time.monotonic()
    await not_found(
        await teams.get(f"/v1/tasks/{theirs['id']}?index=99&wait=20s", headers=B), theirs["id"]
    )
    assert time.monotonic() - started < 2
    # the owner's blocking query does block (and sees the change)
    waiting = asyncio.ensure_future(
        teams.get(f"/v1/tasks/{theirs['id']}?index={theirs['index']}&wait=20s", headers=A)
    )
    await asyncio.sleep(0.2)
    await teams.delete(f"/v1/tasks/{theirs['id']}", headers=A)
    resp = await waiting
    assert resp.status == 200 and (await resp.json())["index"] > theirs["index"]


async def test_list_shows_only_readable_namespaces(teams: Client) -> None:
    a_tasks = [await run(teams, A, "true") for _ in range(3)]
    b_tasks = [await run(teams, B, "true") for _ in range(3)]
    default = await run(teams, WRITER, "true")
    a_ids = {t["id"] for t in a_tasks}
    b_ids = {t["id"] for t in b_tasks}

    async def listed(who: dict[str, str], query: str = "") -> dict[str, Any]:
        resp = await teams.get(f"/v1/tasks?{query}", headers=who)
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    assert ids_in(await listed(A)) == a_ids
    assert ids_in(await listed(B)) == b_ids
    assert ids_in(await listed(WRITER)) == {default["id"]}
    assert ids_in(await listed(AUDIT)) == a_ids | b_ids | {default["id"]}
    assert ids_in(await listed(AUDIT, "namespace=team-b")) == b_ids
    assert ids_in(await listed(B, "namespace=team-a")) == set()  # a filter never widens
    bad = await teams.get("/v1/tasks?namespace=NOPE", headers=B)
    assert bad.status == 400
    # a cursor made by another token pages through the caller's own tasks only
    page = await listed(AUDIT, "limit=1")
    assert page["next_cursor"]
    for cursor_owner_page in (page, await listed(A, "limit=1")):
        got = await listed(B, f"cursor={cursor_owner_page['next_cursor']}")
        assert ids_in(got) <= b_ids


# --- event streams ---------------------------------------------------------------------------


def _ended(task_id: str) -> Callable[[dict[str, str]], bool]:
    def stop(frame: dict[str, str]) -> bool:
        if frame.get("event") != "status":
            return False
        data = json.loads(frame["data"])
        return bool(data["task_id"] == task_id and data["status"] == "succeeded")

    return stop


def _task_ids(frames: list[dict[str, str]]) -> set[str]:
    return {json.loads(f["data"])["task_id"] for f in frames if f.get("event") == "status"}


async def test_event_stream_carries_only_readable_namespaces(teams: Client) -> None:
    sse = {"Accept": "text/event-stream"}
    async with teams.get("/v1/events", headers={**B, **sse}) as live:
        assert live.status == 200
        theirs = await run(teams, A, "sh", "-c", "echo a")
        await wait_status_as(teams, A, theirs["id"], "succeeded")
        mine = await run(teams, B, "true")
        frames = await sse_frames(live, _ended(mine["id"]))
    assert _task_ids(frames) == {mine["id"]}
    # the owner's events, to take cursors from
    history = await (await teams.get(f"/v1/tasks/{theirs['id']}/events", headers=A)).json()
    a_seqs = [e["seq"] for e in history["events"]]
    assert all(e["namespace"] == "team-a" for e in history["events"])
    # replays from the start, from inside the other namespace's events (a cursor its
    # stream handed out) and with ?after=: never an event of team-a
    for cursor in ("0", str(a_seqs[0]), str(a_seqs[-1])):
        for how in ({"Last-Event-ID": cursor}, {}):
            query = "" if how else f"?after={cursor}"
            async with teams.get(f"/v1/events{query}", headers={**B, **sse, **how}) as replay:
                got = await sse_frames(replay, _ended(mine["id"]))
            assert _task_ids(got) == {mine["id"]}, (cursor, how)
    # a filter on the other namespace's task id is an empty stream, not its events
    other = await run(teams, B, "true")
    async with teams.get(
        f"/v1/events?after=0&task_id={theirs['id']}", headers={**B, **sse}
    ) as filtered:
        extra = await run(teams, B, "true")
        await wait_status_as(teams, B, extra["id"], "succeeded")
        await asyncio.sleep(0.2)
        got = await sse_frames_for(filtered, 0.5)
    assert _task_ids(got) == set()
    # the auditor reads both
    async with teams.get("/v1/events?after=0", headers={**AUDIT, **sse}) as every:
        got = await sse_frames(every, _ended(other["id"]))
    assert {theirs["id"], mine["id"]} <= _task_ids(got)


async def wait_status_as(api: Client, who: dict[str, str], task_id: str, status: str) -> None:
    index = 0
    for _ in range(100):
        resp = await api.get(f"/v1/tasks/{task_id}?index={index}&wait=5s", headers=who)
        task = await resp.json()
        if task["status"] == status:
            return
        index = task["index"]
    raise AssertionError(f"{task_id} never {status}")


async def test_log_tail_of_another_namespace(teams: Client) -> None:
    theirs = await run(teams, A, "sh", "-c", "echo hidden; sleep 30")
    sse = {"Accept": "text/event-stream"}
    for extra in ({}, {"Last-Event-ID": "0"}):
        resp = await teams.get(f"/v1/tasks/{theirs['id']}/logs", headers={**B, **sse, **extra})
        await not_found(resp, theirs["id"])
    async with teams.get(f"/v1/tasks/{theirs['id']}/logs", headers={**A, **sse}) as mine:
        assert mine.status == 200
        frames = await sse_frames(mine, lambda f: f.get("event") == "log")
    assert "hidden" in frames[-1]["data"]
    await teams.delete(f"/v1/tasks/{theirs['id']}?force=true", headers=A)


# --- cancel and rerun ------------------------------------------------------------------------


async def test_cancel_and_rerun_of_another_namespace(teams: Client) -> None:
    theirs = await run(teams, A, "sh", "-c", "sleep 30")
    tid = theirs["id"]
    await wait_status_as(teams, A, tid, "running")
    for who in (B, WRITER, OTHER_OPS):
        await not_found(await teams.delete(f"/v1/tasks/{tid}", headers=who), tid)
        await not_found(await teams.post(f"/v1/tasks/{tid}/cancel", headers=who), tid)
        await not_found(await teams.post(f"/v1/tasks/{tid}/rerun", headers=who), tid)
    # may read it, may not cancel it: a 403, since it can see the task anyway
    denied = await teams.delete(f"/v1/tasks/{tid}", headers=A_NO_CANCEL)
    assert denied.status == 403
    assert (await denied.json())["error"]["details"] == {"task_id": tid, "namespace": "team-a"}
    still = await (await teams.get(f"/v1/tasks/{tid}", headers=A)).json()
    assert still["status"] == "running"
    # no rerun was recorded anywhere, and nothing was cancelled
    every = await (await teams.get("/v1/tasks", headers=AUDIT)).json()
    assert [t["id"] for t in every["tasks"]] == [tid]
    events = await (await teams.get(f"/v1/tasks/{tid}/events", headers=A)).json()
    assert not {"cancel_requested", "rerun"} & {e["kind"] for e in events["events"]}
    # the owner reruns (into the same namespace) and cancels
    rerun = await teams.post(f"/v1/tasks/{tid}/rerun", headers=A)
    assert rerun.status == 202 and (await rerun.json())["namespace"] == "team-a"
    for task_id in (tid, (await rerun.json())["id"]):
        resp = await teams.delete(f"/v1/tasks/{task_id}?force=true", headers=A)
        assert resp.status == 202


# --- what may run where ----------------------------------------------------------------------


async def test_namespace_limits_refuse_before_anything_runs(teams: Client, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # team-b may run sh and true, not echo (the gateway's allowlist has echo)
    refused = await teams.post(
        "/v1/tasks", json={"provider": "local", "task": {"command": "echo"}}, headers=B
    )
    assert refused.status == 403, await refused.text()
    assert "allowed_commands" in (await refused.json())["error"]["message"]
    # team-a has no limits: echo runs there
    assert (await run(teams, A, "echo", "hi"))["namespace"] == "team-a"
    # nothing was recorded for the refused submit
    listed = await (await teams.get("/v1/tasks", headers=B)).json()
    assert listed["tasks"] == []
    assert not marker.exists()


async def test_a_denied_provider_is_refused(tmp_path: Path, aiohttp_client: Any) -> None:
    cfg = make_config(
        tmp_path,
        {
            "namespaces": {"team-a": {}},
            "auth": {
                "tokens": [
                    {
                        "name": "a",
                        "token": A["Authorization"][7:],
                        "namespaces": [{"name": "team-a", "providers": ["nomad"]}],
                    }
                ]
            },
            "providers": {"nomad": {"enabled": True, "address": "http://127.0.0.1:9"}},
        },
    )
    api: Client = await aiohttp_client(create_app(cfg))
    resp = await api.post(
        "/v1/tasks", json={"provider": "local", "task": {"command": "true"}}, headers=A
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["details"] == {"namespace": "team-a", "provider": "local"}
    assert (await (await api.get("/v1/tasks", headers=A)).json())["tasks"] == []


async def test_old_configs_keep_working(api: Client) -> None:
    """No namespaces configured: every task is in ``default``, and every token sees it."""
    task = await run(api, WRITER, "true")
    assert task["namespace"] == "default"
    await wait_terminal(api, task["id"])
    for who in (READER_HEADERS, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
        resp = await api.get(f"/v1/tasks/{task['id']}", headers=who)
        assert resp.status == 200
    await wait_status(api, task["id"], "succeeded")


# --- metrics ---------------------------------------------------------------------------------


async def test_namespace_metric_only_if_configured_and_bounded(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    def config(declared: list[str], label: bool) -> Any:
        return make_config(
            tmp_path,
            {
                "namespaces": {ns: {} for ns in declared},
                "metrics": {"namespace_label": label},
                "auth": {"tokens": [{"name": "ops", "token": OPS_TOKEN, "namespaces": "*"}]},
            },
        )

    first: Client = await aiohttp_client(create_app(config(["team-a", "team-c"], False)))
    for ns in ("team-a", "team-c"):
        done = await run(first, OPS, "true", namespace=ns)
        await wait_status_as(first, OPS, done["id"], "succeeded")
    assert "egw_namespace_tasks" not in await (await first.get("/metrics")).text()
    await first.close()
    # team-c is no longer declared: its tasks count as "other", the label stays bounded
    again: Client = await aiohttp_client(create_app(config(["team-a"], True)))
    text = await (await again.get("/metrics")).text()
    assert 'egw_namespace_tasks{namespace="team-a",status="succeeded"} 1.0' in text
    assert 'egw_namespace_tasks{namespace="other",status="succeeded"} 1.0' in text
    assert "team-c" not in text


async def test_audit_query_answers_only_readable_namespaces(teams: Client) -> None:
    theirs = await run(teams, A, "true")
    mine = await run(teams, OTHER_OPS, "true", namespace="team-b")
    await wait_status_as(teams, A, theirs["id"], "succeeded")
    await wait_status_as(teams, OTHER_OPS, mine["id"], "succeeded")

    async def audit(who: dict[str, str], query: str = "") -> set[str]:
        resp = await teams.get(f"/v1/events?after=0&limit=500{query}", headers=who)
        assert resp.status == 200, await resp.text()
        return {e["task_id"] for e in (await resp.json())["events"]}

    # an admin of team-b and default: everyone's events there, none of team-a's
    assert await audit(OTHER_OPS) == {mine["id"]}
    assert await audit(OTHER_OPS, f"&task_id={theirs['id']}") == set()
    assert await audit(OTHER_OPS, "&actor=a") == set()
    # a token of team-a: its own events, in team-a
    assert await audit(A) == {theirs["id"]}
    # an admin of every namespace: every actor, everywhere
    assert await audit(OPS) == {theirs["id"], mine["id"]}


async def test_whoami_names_the_tokens_namespaces(teams: Client) -> None:
    """What the console offers: each granted namespace with its actions."""
    got = {}
    for who in (A, A_NO_CANCEL, AUDIT):
        got[who["Authorization"]] = (await (await teams.get("/v1/whoami", headers=who)).json())[
            "namespaces"
        ]
    assert list(got.values()) == [
        {"team-a": ["cancel", "read", "write"]},
        {"team-a": ["read", "write"]},
        {"*": ["read"]},
    ]
