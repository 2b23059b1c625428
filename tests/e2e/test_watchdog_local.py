"""``on_stuck: resubmit`` on the local runner through the HTTP API: a process that goes
silent is replaced by attempt 2 (its own ``EGW_TASK_ID=<task id>.2``), which succeeds; the
replaced process's last words (output and exit code, written as it is stopped) never reach
the task; ``max_attempts`` bounds the attempts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit_local, wait_for, wait_status

from egw.web.app import create_app

Client = TestClient[web.Request, web.Application]

#: attempt 1 prints, goes silent, and answers the stop with more output and exit code 3;
#: attempt 2 (its marker ends in ``.2``) prints and succeeds. Each start is noted in a file.
SCRIPT = """
echo "$EGW_TASK_ID $$" >> "$1"
case "$EGW_TASK_ID" in
  *.2) echo second; exit 0 ;;
esac
trap 'echo late-output; exit 3' TERM
echo first
sleep 30 &
wait
"""


async def gateway(tmp_path: Path, aiohttp_client: Callable[..., Any], **local: Any) -> Client:
    section = {"silent_timeout_s": 0.5, "on_stuck": "resubmit", "max_attempts": 2, **local}
    api: Client = await aiohttp_client(
        create_app(make_config(tmp_path, {"providers": {"local": section}}))
    )
    return api


async def events(api: Client, task_id: str) -> list[dict[str, Any]]:
    resp = await api.get(f"/v1/tasks/{task_id}/events", headers=WRITER)
    return list((await resp.json())["events"])


async def output(api: Client, task_id: str) -> str:
    resp = await api.get(f"/v1/tasks/{task_id}/logs?follow=false", headers=WRITER)
    return await resp.text()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_silent_process_is_replaced_by_attempt_2_which_succeeds(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    api = await gateway(tmp_path, aiohttp_client)
    starts = tmp_path / "starts"
    task = await submit_local(api, "sh", "-c", SCRIPT, "sh", str(starts))
    done = await wait_for(api, task["id"], lambda t: t["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded" and done["attempt"] == 2 and done["exit_code"] == 0
    lines = starts.read_text().split()
    assert lines[0::2] == [task["id"], f"{task['id']}.2"]  # one process per attempt
    first_pid = int(lines[1])
    got = await events(api, task["id"])
    kinds = [(e["kind"], e["status"], e["applied"]) for e in got]
    assert ("resubmitted", "pending", True) in kinds
    [stuck] = [e for e in got if e["kind"] == "stuck"]
    assert stuck["data"]["attempt"] == 1 and stuck["data"]["on_stuck"] == "resubmit"
    [resubmitted] = [e for e in got if e["kind"] == "resubmitted"]
    assert resubmitted["data"]["previous"]["upstream_id"] == str(first_pid)
    observed = [(e["status"], e["data"].get("attempt")) for e in got if e["kind"] == "observed"]
    # each attempt's start, then attempt 2's end; attempt 1's exit (code 3, after the stop)
    # is not the task's: never reported
    assert observed == [("running", None), ("running", None), ("succeeded", 2)], observed
    assert [e["exit_code"] for e in got if e["exit_code"] is not None] == [0]
    text = await output(api, task["id"])
    assert "first" in text and "second" in text and "late-output" not in text
    assert not alive(first_pid)


async def test_max_attempts_bounds_the_resubmits(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    api = await gateway(tmp_path, aiohttp_client, kill_grace_s=0.5)
    starts = tmp_path / "starts"
    script = 'echo "$EGW_TASK_ID" >> "$1"; exec sleep 30'  # every attempt hangs silent
    task = await submit_local(api, "sh", "-c", script, "sh", str(starts))
    flagged = await wait_for(api, task["id"], lambda t: t["attempt"] == 2 and t["stuck"])
    assert flagged["status"] == "running"
    got = [e for e in await events(api, task["id"]) if e["kind"] in ("stuck", "resubmitted")]
    assert [(e["kind"], e["data"].get("attempt"), e["data"].get("on_stuck")) for e in got] == [
        ("stuck", 1, "resubmit"),
        ("resubmitted", 2, None),
        ("stuck", 2, "flag"),  # no attempts left: flagged only (the existing rule)
    ]
    await asyncio.sleep(0.7)  # a third attempt would have started by now
    assert starts.read_text().split() == [task["id"], f"{task['id']}.2"]
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    done = await wait_status(api, task["id"], "cancelled")
    assert done["attempt"] == 2


async def test_a_process_that_ends_as_it_is_replaced_does_not_end_attempt_2(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    """Attempt 1 exits on its own (code 0) right after it is stopped; attempt 2 is slower:
    the task goes on with attempt 2, then ends with attempt 2's own failure."""
    api = await gateway(tmp_path, aiohttp_client)
    script = (
        'case "$EGW_TASK_ID" in *.2) sleep 0.5; echo two; exit 7 ;; esac; '
        "trap 'exit 0' TERM; echo one; sleep 30 & wait"
    )
    task = await submit_local(api, "sh", "-c", script)
    done = await wait_for(api, task["id"], lambda t: t["status"] in ("succeeded", "failed"))
    assert done["status"] == "failed" and done["exit_code"] == 7 and done["attempt"] == 2
