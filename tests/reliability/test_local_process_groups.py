"""Point 5: a task is all of its processes. A background child (``sh -c 'sleep 301 &
echo started'``) is stopped by cancel, ``force``, a timeout and its command's own exit (after
``kill_grace_s``), also when it left the group with ``setsid``; a slot frees only when the
last process is gone; and SIGTERM stops `egw serve` within ``shutdown_timeout_s``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, GatewayProcess, make_config, submit_local, wait_terminal

from egw.web.app import create_app

Api = TestClient[web.Request, web.Application]
BACKGROUND = "sleep 301 & echo $!"
#: the child ignores SIGTERM: only a SIGKILL to it ends it
STUBBORN = '(trap "" TERM; exec sleep 301) & echo $!'
#: the child leaves the task's session and process group
ESCAPED = "setsid sleep 301 & echo $!"


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def assert_dies(pid: int, within_s: float = 3.0) -> None:
    deadline = time.monotonic() + within_s
    while running(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.02)


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Background children the tests start: killed afterwards whatever happened."""
    started: list[int] = []
    yield started
    for pid in started:
        if running(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def _app(aiohttp_client: Any, tmp_path: Path, **local: Any) -> Api:
    cfg = make_config(tmp_path, {"providers": {"local": local}})
    client: Api = await aiohttp_client(create_app(cfg))
    return client


async def _child(api: Api, task_id: str, pids: list[int]) -> int:
    """The pid the task's script printed (its background child)."""
    for _ in range(200):
        out = await (await api.get(f"/v1/tasks/{task_id}/logs", headers=WRITER)).text()
        if out.strip():
            pids.append(int(out.split()[0]))
            return pids[-1]
        await asyncio.sleep(0.02)
    raise AssertionError("the task printed nothing")


async def _status(api: Api, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = await (await api.get(f"/v1/tasks/{task_id}", headers=WRITER)).json()
    return task


async def _terminal(api: Api, task_id: str, within_s: float = 5.0) -> dict[str, Any]:
    return await asyncio.wait_for(wait_terminal(api, task_id), within_s)


async def test_leftovers_are_killed_after_the_grace_when_the_command_exits(
    aiohttp_client: Any, tmp_path: Path, pids: list[int]
) -> None:
    api = await _app(aiohttp_client, tmp_path, kill_grace_s=0.5)
    task = await submit_local(api, "sh", "-c", STUBBORN)
    child = await _child(api, task["id"], pids)
    done = await _terminal(api, task["id"])
    assert done["status"] == "succeeded" and done["exit_code"] == 0
    assert not running(child)


@pytest.mark.parametrize(("script", "force"), [(BACKGROUND, False), (STUBBORN, True)])
async def test_cancel_reaches_a_child_whose_command_already_exited(
    aiohttp_client: Any, tmp_path: Path, pids: list[int], script: str, force: bool
) -> None:
    api = await _app(aiohttp_client, tmp_path, kill_grace_s=30)
    task = await submit_local(api, "sh", "-c", script)
    child = await _child(api, task["id"], pids)
    await asyncio.sleep(0.2)  # sh has exited; its child runs on
    assert (await _status(api, task["id"]))["status"] == "running"
    suffix = "?force=true" if force else ""
    await api.post(f"/v1/tasks/{task['id']}/cancel{suffix}", headers=WRITER)
    assert (await _terminal(api, task["id"], 3))["status"] == "cancelled"
    assert not running(child)


async def test_a_timeout_kills_the_children_and_frees_the_slot(
    aiohttp_client: Any, tmp_path: Path, pids: list[int]
) -> None:
    api = await _app(aiohttp_client, tmp_path, kill_grace_s=30, max_concurrent=1)
    task = await submit_local(api, "sh", "-c", BACKGROUND, timeout_s=0.5)
    child = await _child(api, task["id"], pids)
    waiting = await submit_local(api, "echo", "next")
    assert waiting["status"] == "queued"
    await asyncio.sleep(0.3)
    # the command exited, its child holds the only slot
    assert (await _status(api, waiting["id"]))["status"] == "queued"
    assert (await _terminal(api, task["id"]))["status"] == "timed_out"
    assert (await _terminal(api, waiting["id"]))["status"] == "succeeded"
    assert not running(child)


async def test_a_child_that_left_the_group_is_stopped_too(
    aiohttp_client: Any, tmp_path: Path, pids: list[int]
) -> None:
    api = await _app(aiohttp_client, tmp_path, kill_grace_s=30)
    task = await submit_local(api, "sh", "-c", ESCAPED)
    child = await _child(api, task["id"], pids)
    for _ in range(100):
        if os.getsid(child) == child:
            break  # it leads a session of its own now
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the child did not leave the task's session")
    await asyncio.sleep(0.2)  # sh has exited
    assert (await _status(api, task["id"]))["status"] == "running"
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert (await _terminal(api, task["id"], 3))["status"] == "cancelled"
    assert not running(child)


def test_sigterm_stops_egw_serve_within_shutdown_timeout(tmp_path: Path, pids: list[int]) -> None:
    shutdown_timeout_s = 3.0
    gateway = GatewayProcess(
        tmp_path,
        {
            "server": {"shutdown_timeout_s": shutdown_timeout_s},
            "providers": {"local": {"kill_grace_s": 1}},
        },
    )
    gateway.start()
    try:
        body = {"provider": "local", "task": {"command": "sh", "args": ["-c", STUBBORN]}}
        request = urllib.request.Request(
            f"{gateway.url}/v1/tasks",
            data=json.dumps(body).encode(),
            headers={**WRITER, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            task_id = json.load(resp)["id"]
        deadline = time.monotonic() + 10
        while True:
            logs = urllib.request.Request(f"{gateway.url}/v1/tasks/{task_id}/logs", headers=WRITER)
            with urllib.request.urlopen(logs, timeout=10) as resp:
                out = resp.read().decode()
            if out.strip():
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child = int(out.split()[0])
        pids.append(child)
        assert gateway.proc is not None
        start = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.proc.wait(30)
        elapsed = time.monotonic() - start
        assert elapsed < shutdown_timeout_s, gateway.tail()
        assert_dies(child, 1)
    finally:
        gateway.stop()
