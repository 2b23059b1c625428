"""Point 6: local tasks accepted but still queued behind ``max_concurrent`` when `egw serve`
is killed with SIGKILL run after the restart; only the task whose process died with the
gateway ends ``failed: gateway restarted``. A queued submit is one commit (the task with its
answer): one killed while many are in flight loses none that was acknowledged."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import TERMINAL, WRITER, GatewayProcess, make_config, submit_local, wait_terminal

from egw.web.app import create_app
from egw.web.keys import service_key


def _call(url: str, body: dict[str, Any] | None = None, key: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {**WRITER, "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    return json.loads(text) if text.startswith("{") else text


def test_queued_tasks_run_after_a_sigkill(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, {"providers": {"local": {"max_concurrent": 1}}})
    gateway.start()
    try:
        url = f"{gateway.url}/v1/tasks"
        running = _call(url, {"provider": "local", "task": {"command": "sleep", "args": ["30"]}})
        assert running["status"] == "running"
        queued = [
            _call(url, {"provider": "local", "task": {"command": "echo", "args": [f"ran {i}"]}})
            for i in range(3)
        ]
        assert [t["status"] for t in queued] == ["queued"] * 3
        gateway.kill()
        gateway.start()

        deadline = time.monotonic() + 10
        tasks = {}
        while True:
            tasks = {t["id"]: _call(f"{url}/{t['id']}") for t in [running, *queued]}
            if all(t["status"] in TERMINAL for t in tasks.values()):
                break
            assert time.monotonic() < deadline, tasks
            time.sleep(0.1)
        died = tasks[running["id"]]
        assert (died["status"], died["reason"]) == ("failed", "gateway restarted")
        for i, task in enumerate(queued):
            assert tasks[task["id"]]["status"] == "succeeded", tasks[task["id"]]
            assert _call(f"{url}/{task['id']}/logs") == f"ran {i}\n"
    finally:
        gateway.stop()


def test_queued_submits_acknowledged_before_a_sigkill_all_run(tmp_path: Path) -> None:
    """Four clients submit queued tasks as fast as they can; the gateway is killed with
    SIGKILL among them. Every submit it acknowledged exists after the restart, once, under
    the id it was answered with, and runs; replaying its key answers that id."""
    gateway = GatewayProcess(tmp_path, {"providers": {"local": {"max_concurrent": 1}}})
    gateway.start()
    acked: dict[str, str] = {}  # Idempotency-Key -> task id
    stop = threading.Event()
    url = f"{gateway.url}/v1/tasks"

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            key, i = f"c{n}-{i}", i + 1
            body = {"provider": "local", "task": {"command": "echo", "args": [key]}}
            try:
                task = _call(url, body, key)
            except (OSError, urllib.error.HTTPError):
                return  # the gateway died with this submit in flight: not acknowledged
            assert task["status"] == "queued", task
            acked[key] = task["id"]

    try:
        held = _call(url, {"provider": "local", "task": {"command": "sleep", "args": ["30"]}})
        clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in clients:
            thread.start()
        while len(acked) < 40:
            time.sleep(0.01)
        gateway.kill()
        stop.set()
        for thread in clients:
            thread.join(10)
        gateway.start()

        listed = _call(f"{url}?limit=500")["tasks"]
        assert len(listed) < 500  # all of them
        ids = [t["id"] for t in listed if t["id"] != held["id"]]
        assert len(ids) == len(set(ids)) and set(acked.values()) <= set(ids)
        for key, task_id in list(acked.items())[:10]:
            body = {"provider": "local", "task": {"command": "echo", "args": [key]}}
            assert _call(url, body, key)["id"] == task_id
        deadline = time.monotonic() + 60
        pending = set(acked.values())
        while pending:
            pending = {t for t in pending if _call(f"{url}/{t}")["status"] not in TERMINAL}
            assert time.monotonic() < deadline, f"{len(pending)} acknowledged tasks never ended"
            time.sleep(0.2)
        for key, task_id in acked.items():
            assert _call(f"{url}/{task_id}")["status"] == "succeeded"
            assert _call(f"{url}/{task_id}/logs") == f"{key}\n"
    finally:
        stop.set()
        gateway.stop()


async def test_a_start_that_was_not_recorded_is_not_run_twice(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway that died between starting a queued task's process and recording it: the
    process, found by its ``EGW_TASK_ID``, is stopped and the task is not run again."""
    cfg = make_config(tmp_path, {"providers": {"local": {"max_concurrent": 1}}})
    app = create_app(cfg)
    api = await aiohttp_client(app)
    await submit_local(api, "sleep", "30")
    queued = await submit_local(api, "sh", "-c", f"touch {tmp_path}/ran-twice")
    assert queued["status"] == "queued"
    started = subprocess.Popen(
        ["sleep", "30"], env={"PATH": os.environ["PATH"], "EGW_TASK_ID": queued["id"]}
    )

    async def killed() -> None:
        """The old gateway's memory is gone: it stops nothing and waits for nothing."""

    monkeypatch.setattr(app[service_key].providers["local"], "close", killed)
    try:
        await api.close()
        api2 = await aiohttp_client(create_app(cfg))
        done = await asyncio.wait_for(wait_terminal(api2, queued["id"]), 5)
        assert (done["status"], done["reason"]) == ("failed", "gateway restarted")
        assert started.wait(5) == -signal.SIGKILL
        assert not (tmp_path / "ran-twice").exists()
    finally:
        started.kill()
        started.wait()


async def test_leftovers_of_a_finished_task_are_stopped_at_start(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """A task recorded as ended whose child outlived a gateway killed with SIGKILL (its
    command exited, then the gateway died before the group was gone): the next gateway
    stops that child, found by its ``EGW_TASK_ID``; a process marked with an id this
    database does not know (another gateway's task) is left alone."""
    cfg = make_config(tmp_path)
    api = await aiohttp_client(create_app(cfg))
    done = await wait_terminal(api, (await submit_local(api, "true"))["id"])
    assert done["status"] == "succeeded"
    await api.close()
    env = {"PATH": os.environ["PATH"]}
    orphan = subprocess.Popen(["sleep", "30"], env={**env, "EGW_TASK_ID": done["id"]})
    stranger = subprocess.Popen(["sleep", "30"], env={**env, "EGW_TASK_ID": "t_" + "0" * 32})
    try:
        api2 = await aiohttp_client(create_app(cfg))
        assert orphan.wait(5) == -signal.SIGKILL
        assert stranger.poll() is None
        await api2.close()
    finally:
        for proc in (orphan, stranger):
            proc.kill()
            proc.wait()
