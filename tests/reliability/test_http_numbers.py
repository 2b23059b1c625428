"""Issue point 9: every number a client sends is bounded before Python arithmetic or SQLite
sees it, so an absurd one is a 400 in egw's error shape, never a 500.

The submit body's ``timeout_s``, the list cursor (base64 of ``s<seq>``), and every numeric
query parameter and header (``index``, ``wait``, ``limit``, ``offset``, ``after``,
``Last-Event-ID``) are tried with numbers past a float (``10**400``), past SQLite's 64 bits,
past Python's 4,300-digit ``int()`` limit (leading zeros count), and digits that are not
ASCII.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import READER, WRITER, submit_local, wait_terminal

Client = TestClient[web.Request, web.Application]
JSON = {"Content-Type": "application/json"}
SUBMIT = '{"provider":"local","task":{"command":"true"},"timeout_s":TIMEOUT}'


async def expect_400(resp: Any, field: str) -> None:
    text = await resp.text()
    assert resp.status == 400, text
    error = json.loads(text)["error"]
    assert error["code"] == "invalid_request", error
    assert error["details"].get("field") == field, error


def cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "timeout",
    [
        "9" * 309,  # the 309 digits: float() overflows
        "1" + "0" * 400,
        "-" + "9" * 400,
        "1e400",  # JSON's own infinity
        "-1e400",
        "0",
        "-0.0",
        "1e-400",  # rounds to 0.0
        "604801",
        "true",
        '"60"',
    ],
)
async def test_submit_timeout_is_bounded(api: Client, timeout: str) -> None:
    body = SUBMIT.replace("TIMEOUT", timeout)
    resp = await api.post("/v1/tasks", data=body, headers={**WRITER, **JSON})
    await expect_400(resp, "timeout_s")


async def test_submit_timeout_in_range_is_taken(api: Client) -> None:
    for timeout in ("604800", "0.5", "1e2"):
        body = SUBMIT.replace("TIMEOUT", timeout)
        resp = await api.post("/v1/tasks", data=body, headers={**WRITER, **JSON})
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["timeout_s"] == float(timeout)


@pytest.mark.parametrize(
    "cursor",
    [
        "czk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5",  # the issue's: s + 29 nines
        cursor_of("s" + str(2**63)),  # past SQLite's integers
        cursor_of("s" + str(2**62 + 1)),
        cursor_of("s" + "0" * 5000 + "1"),  # past int()'s 4,300 digits
        cursor_of("s١٢"),  # Arabic-Indic digits: str.isdigit() says yes
        cursor_of("s-1"),
        cursor_of("s+1"),
        cursor_of("s 1"),
        cursor_of("s1\n"),
        cursor_of("s"),
        "A" * 5000,
    ],
)
async def test_list_cursor_is_bounded(api: Client, cursor: str) -> None:
    resp = await api.get(f"/v1/tasks?cursor={cursor}", headers=READER)
    await expect_400(resp, "cursor")


async def test_list_cursor_at_the_bound_is_taken(api: Client) -> None:
    await submit_local(api, "true")
    resp = await api.get(f"/v1/tasks?cursor={cursor_of('s' + str(2**62))}", headers=READER)
    assert resp.status == 200, await resp.text()
    assert len((await resp.json())["tasks"]) == 1
    resp = await api.get(f"/v1/tasks?cursor={cursor_of('s000001')}", headers=READER)
    assert resp.status == 200, await resp.text()


HUGE = ["9" * 20, "9" * 400, "0" * 5000 + "9" * 20, "١٢", "-" + "9" * 400, "1e400"]


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("", "index"),
        ("/status", "index"),
        ("/logs", "offset"),
        ("/logs?follow=1&x=1", "offset"),
        ("/events", "after"),
        ("/events", "limit"),
    ],
)
async def test_task_query_numbers_are_bounded(
    api: Client, done: dict[str, Any], path: str, name: str, value: str
) -> None:
    sep = "&" if "?" in path else "?"
    resp = await api.get(f"/v1/tasks/{done['id']}{path}{sep}{name}={value}", headers=READER)
    await expect_400(resp, name)


@pytest.mark.parametrize("value", HUGE)
async def test_list_limit_is_bounded(api: Client, value: str) -> None:
    resp = await api.get(f"/v1/tasks?limit={value}", headers=READER)
    await expect_400(resp, "limit")


@pytest.mark.parametrize("value", HUGE)
async def test_events_after_is_bounded(api: Client, value: str) -> None:
    resp = await api.get(f"/v1/events?after={value}", headers=READER)
    await expect_400(resp, "after")


@pytest.mark.parametrize("value", [v for v in HUGE if v.isascii()])
async def test_last_event_id_is_bounded(api: Client, done: dict[str, Any], value: str) -> None:
    headers = {**READER, "Accept": "text/event-stream", "Last-Event-ID": value}
    resp = await api.get(f"/v1/tasks/{done['id']}/logs", headers=headers)
    await expect_400(resp, "offset")
    resp = await api.get("/v1/events", headers=headers)
    await expect_400(resp, "after")


@pytest.mark.parametrize("wait", ["9" * 5000 + "s", "9" * 400 + ".5h", "0" * 5000 + "1ms"])
async def test_an_absurd_wait_is_capped(api: Client, done: dict[str, Any], wait: str) -> None:
    """``wait`` is a duration capped at ``max_wait_s`` (float() of any digit string is at
    most infinity, never an error): answered at once, the index being passed already."""
    resp = await api.get(f"/v1/tasks/{done['id']}?index=1&wait={wait}", headers=READER)
    assert resp.status == 200, await resp.text()


async def test_leading_zeros_within_the_bound_are_taken(api: Client, done: dict[str, Any]) -> None:
    """Leading zeros count toward Python's 4,300-digit ``int()`` limit, not toward the bound."""
    zeros = "0" * 5000
    for suffix in (f"?index={zeros}1", f"/logs?offset={zeros}", f"/events?after={zeros}"):
        resp = await api.get(f"/v1/tasks/{done['id']}{suffix}", headers=READER)
        assert resp.status == 200, (suffix, await resp.text())


@pytest.fixture
async def done(api: Client) -> dict[str, Any]:
    return await wait_terminal(api, (await submit_local(api, "true"))["id"])
