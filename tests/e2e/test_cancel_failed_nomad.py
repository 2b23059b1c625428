"""cancel_failed with Nomad: a stop the ACL refuses (403 on ``DELETE /v1/job``), and a stop
Nomad accepts but the task ignores until its kill_timeout, past egw's cancel_timeout_s:
cancel_failed, then the force-kill's report ends the task."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit, wait_status

from egw.testing.nomad import NomadSimulator
from egw.web.app import create_app

TASK = {"image": "busybox:latest", "command": "sleep", "args": ["1000"]}
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def sim() -> AsyncIterator[NomadSimulator]:
    s = NomadSimulator(time_scale=0.02)
    await s.start()
    yield s
    await s.close()


async def gateway(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> Client:
    nomad = {
        "enabled": True,
        "address": sim.url,
        "log_grace_s": 2,
        "blocking_wait_s": 5,
        "cancel_timeout_s": 0.5,
    }
    cfg = make_config(tmp_path, {"providers": {"nomad": nomad}})
    api: Client = await aiohttp_client(create_app(cfg))
    return api


async def test_a_stop_nomad_refuses_is_cancel_failed_and_a_new_cancel_works(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    sim.script("long", stdout=b"started\n", duration_s=1000)
    api = await gateway(tmp_path, sim, aiohttp_client)
    task = await submit(api, {"provider": "nomad", "task": {**TASK, "job_id": "long"}})
    await wait_status(api, task["id"], "running")
    sim.fail(r"^/v1/job/long$", method="DELETE", status=403, body="Permission denied", times=10)
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert resp.status >= 400
    body = await (await api.get(f"/v1/tasks/{task['id']}", headers=WRITER)).json()
    assert body["status"] == "cancel_failed"
    assert body["reason"] == "upstream refused the cancel: nomad: Permission denied"
    sim.faults.clear()  # the operator fixed the ACL
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel?force=true", headers=WRITER)
    assert resp.status == 202, await resp.text()
    assert (await wait_status(api, task["id"], "cancelled"))["stuck"] is None


async def test_a_stop_the_task_ignores_fails_at_the_deadline_then_the_kill_ends_it(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    # kill_timeout 100 simulated seconds: 2 s of real time, past cancel_timeout_s 0.5
    sim.script("stubborn", stdout=b"started\n", duration_s=1000, kill_timeout_s=100)
    api = await gateway(tmp_path, sim, aiohttp_client)
    task = await submit(api, {"provider": "nomad", "task": {**TASK, "job_id": "stubborn"}})
    await wait_status(api, task["id"], "running")
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert resp.status == 202
    failed = await wait_status(api, task["id"], "cancel_failed")
    assert failed["reason"] == "upstream did not confirm the cancel within 0.5s"
    # Nomad force-kills it after kill_timeout: the later report moves the task on
    await wait_status(api, task["id"], "cancelled")
