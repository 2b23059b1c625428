"""Point 6: local tasks accepted but still queued behind ``max_concurrent`` when `egw serve`
is killed with SIGKILL run after the restart; only the task whose process died with the
gateway ends ``failed: gateway restarted``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import TERMINAL, WRITER, GatewayProcess, make_config, submit_local, wait_terminal

from egw.web.app import create_app
from egw.web.keys import service_key


def _call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={**WRITER, "Content-Type": "application/json"}
    )
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
