"""The audit query, ``GET /v1/events`` as JSON: every filter against the whole log read by
``admin``, bad input, scopes, HEAD, and paging that neither skips nor repeats an event
while others are appended."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import ADMIN, READER, WRITER, config_dict, submit_local, wait_status, wait_terminal

from egw.config import Config, parse_config
from egw.core.access import ALL
from egw.core.audit import EventFilter
from egw.core.model import parse_time
from egw.web.keys import reads_key, service_key

Client = TestClient[web.Request, web.Application]
PUSHER = {"Authorization": "Bearer pusher-token-0123456789"}


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    data = config_dict(tmp_path)
    extra = {"name": "pusher", "token": "pusher-token-0123456789", "scopes": ["tasks:write"]}
    data["auth"]["tokens"].append(extra)
    return parse_config(data, {})


async def page(api: Client, query: str = "", headers: dict[str, str] = ADMIN) -> dict[str, Any]:
    resp = await api.get(f"/v1/events?{query}", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    return body


async def everything(api: Client, query: str = "", headers: dict[str, str] = ADMIN) -> list[Any]:
    """Every matching event, page by page (``next_after``)."""
    events: list[Any] = []
    after = 0
    while True:
        body = await page(api, f"{query}&after={after}&limit=500", headers)
        events += body["events"]
        if body["next_after"] is None:
            return events
        after = body["next_after"]


@pytest.fixture
async def log(api: Client) -> dict[str, Any]:
    """Work by two actors: ``writer`` runs one task and cancels another, ``admin`` runs one."""
    done = await submit_local(api, "true")
    long = await submit_local(api, "sleep", "30")
    await wait_status(api, long["id"], "running")
    resp = await api.post(f"/v1/tasks/{long['id']}/cancel", headers=WRITER)
    assert resp.status == 202
    body = {"provider": "local", "task": {"command": "true"}}
    resp = await api.post("/v1/tasks", json=body, headers=ADMIN)
    assert resp.status == 202
    theirs = await resp.json()
    for task in (done, long, theirs):
        await wait_terminal(api, task["id"])
    return {"done": done, "long": long, "theirs": theirs, "all": await everything(api)}


async def test_json_by_default_and_sse_when_asked(api: Client, log: dict[str, Any]) -> None:
    body = await page(api)
    assert [e["seq"] for e in body["events"]] == sorted(e["seq"] for e in body["events"])
    assert body["events"] == log["all"][:50] and body["pruned_seq"] == 0
    for headers, query in (({"Accept": "text/event-stream"}, ""), ({}, "?follow=1")):
        async with api.get(f"/v1/events{query}", headers={**ADMIN, **headers}) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"


async def test_each_filter_is_exactly_the_matching_part_of_the_log(
    api: Client, log: dict[str, Any]
) -> None:
    every = log["all"]
    assert {e["actor"] for e in every} == {"writer", "admin", None}

    async def check(query: str, keep: Any) -> list[Any]:
        got = await everything(api, query)
        assert got == [e for e in every if keep(e)], query
        assert got, f"{query} matched nothing: a vacuous check"
        return got

    await check("actor=writer", lambda e: e["actor"] == "writer")
    cancels = await check("type=cancel_requested", lambda e: e["kind"] == "cancel_requested")
    assert [e["task_id"] for e in cancels] == [log["long"]["id"]]
    await check(
        "type=submitted&type=cancel_requested",
        lambda e: e["kind"] in ("submitted", "cancel_requested"),
    )
    await check("provider=local", lambda e: True)
    assert await everything(api, "provider=nomad") == []
    task_id = log["done"]["id"]
    mine = await check(f"task_id={task_id}", lambda e: e["task_id"] == task_id)
    resp = await api.get(f"/v1/tasks/{task_id}/events", headers=ADMIN)
    assert mine == (await resp.json())["events"]
    await check(
        f"actor=writer&type=submitted&task_id={task_id}",
        lambda e: e["actor"] == "writer" and e["kind"] == "submitted" and e["task_id"] == task_id,
    )
    # since/until, in UTC and in another offset naming the same instant
    middle = every[len(every) // 2]["at"]
    at = parse_time(middle)
    assert at is not None
    await check(f"since={middle}", lambda e: e["at"] >= middle)
    await check(f"until={middle}", lambda e: e["at"] < middle)
    east = at.astimezone(datetime.now().astimezone().tzinfo).isoformat()
    shifted = (at + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00"
    for same in (east, shifted):
        assert await everything(api, f"since={same.replace('+', '%2B')}") == [
            e for e in every if e["at"] >= middle
        ]
    first, last = every[0]["at"], every[-1]["at"]
    assert await everything(api, f"since={first}&until={last}") == [
        e for e in every if first <= e["at"] < last
    ]
    assert await everything(api, f"since={last}&until={first}") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("type=Bad!", "type"),
        ("type=", "type"),
        ("&".join(f"type=k{i}" for i in range(21)), "type"),
        ("since=yesterday", "since"),
        ("since=2026-11-27", "since"),  # a date is not a date-time
        ("since=2026-13-01T00:00:00Z", "since"),
        ("since=2026-02-30T00:00:00Z", "since"),
        ("until=2026-11-27T18:55:00", "until"),  # no offset: which instant?
        ("until=2026-11-27 18:55:00Z", "until"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("after=-1", "after"),
        ("after=x", "after"),
        ("follow=maybe", "follow"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(api: Client, query: str, field: str) -> None:
    for method in ("GET", "HEAD"):
        resp = await api.request(method, f"/v1/events?{query}", headers=READER)
        assert resp.status == 400, (method, query, await resp.text())
        if method == "GET":
            error = (await resp.json())["error"]
            assert error["code"] == "invalid_request" and error["details"]["field"] == field


async def test_odd_but_valid_instants_are_taken(api: Client, log: dict[str, Any]) -> None:
    every = log["all"]
    for query in (
        "since=0001-01-01T00:00:00%2B23:59",  # before year 1 in UTC
        "since=1990-12-31T23:59:60Z",  # a leap second
        "since=2000-01-01t00:00:00.123456789z",  # lower case, nanoseconds
    ):
        assert await everything(api, query) == every, query
    assert await everything(api, "since=9999-12-31T23:59:59-23:59") == []


async def test_a_token_without_admin_sees_only_its_own_actors_events(
    api: Client, log: dict[str, Any]
) -> None:
    writer = await everything(api, "", WRITER)
    assert writer == [e for e in log["all"] if e["actor"] == "writer"]
    assert {e["kind"] for e in writer} == {"submitted", "cancel_requested"}
    assert await everything(api, "actor=writer", WRITER) == writer
    assert await everything(api, "", READER) == []  # it never did anything
    for headers, actor in ((WRITER, "admin"), (READER, "writer")):
        resp = await api.get(f"/v1/events?actor={actor}", headers=headers)
        assert resp.status == 403
        assert (await resp.json())["error"]["details"] == {"scope": "admin"}
    resp = await api.get("/v1/events", headers=PUSHER)  # no tasks:read at all
    assert resp.status == 403
    # admin sees every actor's events, and those no actor caused (upstream reports)
    assert any(e["actor"] is None and e["kind"] == "observed" for e in log["all"])
    assert await everything(api, "actor=admin") == [e for e in log["all"] if e["actor"] == "admin"]


async def test_head_answers_like_get_without_a_body(api: Client, log: dict[str, Any]) -> None:
    get = await api.get("/v1/events?type=submitted", headers=WRITER)
    await get.read()
    head = await api.head("/v1/events?type=submitted", headers=WRITER)
    assert head.status == get.status == 200 and await head.read() == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert get.content_type == "application/json"
    assert (await api.head("/v1/events?actor=admin", headers=WRITER)).status == 403


async def test_paging_neither_skips_nor_repeats_while_events_are_appended(api: Client) -> None:
    for _ in range(3):
        await submit_local(api, "true")
    stop = asyncio.Event()

    async def append() -> None:
        while not stop.is_set():
            await submit_local(api, "true")
            await asyncio.sleep(0.005)

    writer = asyncio.create_task(append())
    seen: dict[str, list[int]] = {"": [], "type=submitted": []}
    try:
        for query, seqs in seen.items():
            after = 0
            for _ in range(15):  # read on while the log grows under the reader
                body = await page(api, f"{query}&after={after}&limit=2")
                assert len(body["events"]) <= 2
                seqs += [e["seq"] for e in body["events"]]
                after = body["next_after"] if body["next_after"] is not None else body["last_seq"]
                await asyncio.sleep(0.01)
            seen[query] = seqs + [
                e["seq"] for e in await everything(api, f"{query}&after={after}")
            ]  # catch up
    finally:
        stop.set()
        await writer
    every = await everything(api)
    for query, seqs in seen.items():
        upto = seqs[-1]
        keep = [e["seq"] for e in every if e["seq"] <= upto]
        if query:
            keep = [e["seq"] for e in every if e["seq"] <= upto and e["kind"] == "submitted"]
        assert seqs == keep, query  # every one, once, in order
        assert len(seqs) > 6


async def test_a_short_scan_window_pages_on_without_losing_anything(
    api: Client, log: dict[str, Any]
) -> None:
    """With a window of 2 seqs a filter that few events match answers short or empty pages
    with a ``next_after``; read to the end, they are exactly the matching events."""
    reads = api.app[reads_key]
    where = EventFilter(kinds=("cancel_requested",))
    found, after, pages = [], 0, 0
    while True:
        answer = await reads.audit(after=after, where=where, limit=5, window=2, scope=ALL)
        pages += 1
        found += [e.seq for e in answer.events]
        assert answer.last_seq <= after + 2
        if answer.next_after is None:
            break
        after = answer.next_after
    assert found == [e["seq"] for e in log["all"] if e["kind"] == "cancel_requested"]
    assert pages >= len(log["all"]) // 2


async def test_pruned_events_are_said_to_be_gone(api: Client) -> None:
    old = await submit_local(api, "true")
    await wait_terminal(api, old["id"])
    api.app[service_key]._retention_days = 0
    assert (await api.post("/v1/admin/prune", headers=ADMIN)).status == 200
    body = await page(api)
    assert body["pruned_seq"] > 0
    assert all(e["seq"] > body["pruned_seq"] for e in body["events"])
