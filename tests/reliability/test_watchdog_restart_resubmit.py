"""A resubmit interrupted by a restart of a real `egw serve` (SIGKILL) between recording
attempt 2 and its submit, on the local runner and on Nomad: after the restart attempt 2 is
started once, never twice, and the replaced attempt's work is gone (its processes killed,
not adopted; its Nomad job stopped before the same job ID is registered again)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from reliability.faultkit import Gateway, until
from support import WRITER

from egw.testing.nomad import NomadSimulator

#: attempt 1 ignores SIGTERM (so retiring it waits out a long kill_grace_s: the gateway is
#: killed meanwhile) and goes silent; attempt 2 prints and succeeds; each start is noted
LOCAL_SCRIPT = """
echo "$EGW_TASK_ID $$" >> "$1"
case "$EGW_TASK_ID" in
  *.2) echo second; exit 0 ;;
esac
trap '' TERM
echo first
sleep 60
"""
JOB = "restart-job"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=WRITER) as session:
        yield session


async def events(http: aiohttp.ClientSession, gw: Gateway, task_id: str) -> list[dict[str, Any]]:
    async with http.get(f"{gw.url}/v1/tasks/{task_id}/events") as resp:
        return list((await resp.json())["events"])


async def resubmitted(http: aiohttp.ClientSession, gw: Gateway, task_id: str) -> None:
    for _ in range(400):
        if any(e["kind"] == "resubmitted" for e in await events(http, gw, task_id)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not resubmitted")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_local_a_resubmit_interrupted_by_a_restart_kills_the_old_process_and_starts_once(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    local = {"silent_timeout_s": 0.5, "on_stuck": "resubmit", "kill_grace_s": 60}
    gw = Gateway(tmp_path, {"providers": {"local": local}})
    starts = tmp_path / "starts"
    body = {
        "provider": "local",
        "task": {"command": "sh", "args": ["-c", LOCAL_SCRIPT, "sh", str(starts)]},
    }
    await gw.start(http)
    try:
        async with http.post(f"{gw.url}/v1/tasks", json=body) as resp:
            task = await resp.json()
        await until(http, gw, task["id"], "running")
        await resubmitted(http, gw, task["id"])
        gw.kill()  # retire waits for attempt 1, which ignores SIGTERM: nothing started yet
        [(key, pid)] = [line.split() for line in starts.read_text().splitlines()]
        assert key == task["id"] and alive(int(pid))  # the gateway's death left it running
        await gw.start(http)
        done = await until(http, gw, task["id"], "succeeded")
        assert done["attempt"] == 2
        lines = [line.split()[0] for line in starts.read_text().splitlines()]
        assert lines == [task["id"], f"{task['id']}.2"]  # attempt 2 started once
        for _ in range(100):
            if not alive(int(pid)):
                break
            await asyncio.sleep(0.05)
        assert not alive(int(pid))  # killed at start, never adopted
        kinds = [e["kind"] for e in await events(http, gw, task["id"])]
        assert kinds.count("resubmitted") == 1 and kinds.count("stuck") == 1
    finally:
        await gw.stop()


@pytest.fixture
async def sim() -> AsyncIterator[NomadSimulator]:
    s = NomadSimulator(time_scale=0.02)
    await s.start()
    yield s
    await s.close()


async def test_nomad_a_resubmit_interrupted_by_a_restart_stops_the_old_job_and_registers_once(
    tmp_path: Path, sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    nomad = {
        "enabled": True,
        "address": sim.url,
        "log_grace_s": 1,
        "blocking_wait_s": 5,
        "queued_timeout_s": 0.5,
        "on_stuck": "resubmit",
        "max_attempts": 3,
    }
    gw = Gateway(tmp_path, {"providers": {"nomad": nomad}})
    body = {
        "provider": "nomad",
        "task": {"job_id": JOB, "image": "busybox:latest", "command": "echo", "args": ["hi"]},
    }
    sim.script(JOB, schedule_delay_s=100_000)  # attempt 1 is never placed
    # the stop of attempt 1's job fails until the restart: attempt 2 cannot be registered
    sim.fail(rf"^/v1/job/{JOB}$", method="DELETE", status=503, body="No leader", times=10**6)
    await gw.start(http)
    try:
        async with http.post(f"{gw.url}/v1/tasks", json=body) as resp:
            task = await resp.json()
        await until(http, gw, task["id"], "queued")
        await resubmitted(http, gw, task["id"])
        gw.kill()
        assert sim.count("POST", r"^/v1/jobs$") == 1
        job = sim.cluster.jobs[("default", JOB)]
        assert not job["Stop"] and job["Meta"]["egw_task_id"] == task["id"]
        sim.faults.clear()
        sim.script(JOB, stdout=b"second\n", duration_s=2)
        await gw.start(http)
        done = await until(http, gw, task["id"], "succeeded")
        assert done["attempt"] == 2 and done["upstream"]["id"] == JOB
        assert sim.count("POST", r"^/v1/jobs$") == 2  # attempt 2 registered once
        job = sim.cluster.jobs[("default", JOB)]
        # attempt 1's job was stopped (version 1), then replaced by check-and-set (version 2)
        assert job["Meta"]["egw_task_id"] == f"{task['id']}.2" and job["Version"] == 2
        kinds = [e["kind"] for e in await events(http, gw, task["id"])]
        assert kinds.count("resubmitted") == 1 and kinds.count("stuck") == 1
    finally:
        await gw.stop()
