"""Local runner via the API: real subprocesses, exit codes, cancel, queueing, timeouts, restart."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit_local, wait_terminal

from egw.config import Config, LocalConfig
from egw.errors import Forbidden, InvalidRequest
from egw.providers.base import WebhookProvider
from egw.providers.local import LocalProvider, LocalSpec
from egw.web.app import create_app


def test_spec_is_typed_and_stored_as_today() -> None:
    local = LocalProvider(LocalConfig())
    spec = local.validate({"command": "echo", "args": ["hi"], "env": {"A": "1"}})
    assert spec == LocalSpec(command="echo", args=("hi",), env={"A": "1"})
    assert spec.to_json() == {"command": "echo", "args": ["hi"], "env": {"A": "1"}}
    assert local.validate({"command": "true"}).to_json() == {
        "command": "true",
        "args": [],
        "env": {},
    }
    with_cwd = local.validate({"command": "ls", "cwd": "/tmp"})
    assert with_cwd.to_json()["cwd"] == "/tmp"
    assert LocalSpec.from_json(with_cwd.to_json()) == with_cwd


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({}, "task.command"),
        ({"command": "  "}, "task.command"),
        ({"command": "a\x00b"}, "task.command"),
        ({"command": "true", "args": "x"}, "task.args"),
        ({"command": "true", "args": ["ok", 3]}, "task.args[1]"),
        ({"command": "true", "env": ["A=1"]}, "task.env"),
        ({"command": "true", "env": {"1BAD": "x"}}, "task.env.1BAD"),
        ({"command": "true", "env": {"A": 1}}, "task.env.A"),
        ({"command": "true", "cwd": ""}, "task.cwd"),
        ({"command": "true", "shell": True}, "task.shell"),
    ],
)
def test_validation_names_the_field(task: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        LocalProvider(LocalConfig()).validate(task)
    assert err.value.field == field


def test_allowlist_is_forbidden_not_invalid() -> None:
    local = LocalProvider(LocalConfig(allowed_commands=["echo"]))
    assert local.validate({"command": "echo"}).command == "echo"
    with pytest.raises(Forbidden) as err:
        local.validate({"command": "rm"})
    assert err.value.details["field"] == "task.command"


def test_takes_no_webhooks() -> None:
    assert not isinstance(LocalProvider(LocalConfig()), WebhookProvider)


async def test_exit_codes(api: TestClient[web.Request, web.Application]) -> None:
    ok = await submit_local(api, "true")
    bad = await submit_local(api, "sh", "-c", "echo nope >&2; exit 7")
    assert (await wait_terminal(api, ok["id"]))["status"] == "succeeded"
    failed = await wait_terminal(api, bad["id"])
    assert failed["status"] == "failed" and failed["exit_code"] == 7
    assert failed["reason"] == "exit code 7"


async def test_command_not_found_is_refused_at_submit(
    api: TestClient[web.Request, web.Application],
) -> None:
    for command in ("/no/such/program", "no-such-program-egw"):
        body = {"provider": "local", "task": {"command": command}}
        resp = await api.post("/v1/tasks", json=body, headers=WRITER)
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
        assert error["details"]["field"] == "task.command"
        assert command in error["message"]


async def test_a_command_that_cannot_start_fails_with_a_reason(
    api: TestClient[web.Request, web.Application],
) -> None:
    body = {"provider": "local", "task": {"command": "true", "cwd": "/no/such/dir"}}
    resp = await api.post("/v1/tasks", json=body, headers=WRITER)
    assert resp.status == 202, await resp.text()
    task = await resp.json()
    done = await wait_terminal(api, task["id"])
    assert done["status"] == "failed"
    assert "cannot start 'true' in /no/such/dir" in done["reason"]


async def test_environment_is_clean(
    api: TestClient[web.Request, web.Application], monkeypatch: Any
) -> None:
    monkeypatch.setenv("EGW_TOKEN", "must-not-leak-into-tasks")
    body = {"provider": "local", "task": {"command": "env", "env": {"GREETING": "hi"}}}
    resp = await api.post("/v1/tasks", json=body, headers=WRITER)
    task = await resp.json()
    await wait_terminal(api, task["id"])
    out = await (await api.get(f"/v1/tasks/{task['id']}/logs", headers=WRITER)).text()
    assert "GREETING=hi" in out
    assert f"EGW_TASK_ID={task['id']}" in out
    assert "must-not-leak" not in out


async def test_cancel_stops_the_process_group(
    api: TestClient[web.Request, web.Application],
) -> None:
    # the child ignores nothing; its grandchild shares the process group and dies with it
    task = await submit_local(api, "sh", "-c", "sleep 60 & sleep 60; wait")
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    assert resp.status == 202
    assert (await resp.json())["status"] == "cancelling"
    start = time.monotonic()
    done = await wait_terminal(api, task["id"])
    assert done["status"] == "cancelled"
    assert time.monotonic() - start < 5
    # cancelling again is accepted and changes nothing
    again = await api.delete(f"/v1/tasks/{task['id']}", headers=WRITER)
    assert again.status == 202 and (await again.json())["status"] == "cancelled"


async def test_sigterm_ignored_then_sigkill_after_grace(
    api: TestClient[web.Request, web.Application],
) -> None:
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\ntime.sleep(60)"
    )
    task = await submit_local(api, sys.executable, "-c", script)
    for _ in range(100):
        out = await (await api.get(f"/v1/tasks/{task['id']}/logs", headers=WRITER)).text()
        if "up" in out:
            break
        await asyncio.sleep(0.05)
    start = time.monotonic()
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    done = await wait_terminal(api, task["id"])
    elapsed = time.monotonic() - start
    assert done["status"] == "cancelled" and done["exit_code"] == -9
    assert 0.9 <= elapsed < 5  # kill_grace_s is 1 in the test config


async def test_force_cancel_kills_at_once(api: TestClient[web.Request, web.Application]) -> None:
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"
    task = await submit_local(api, sys.executable, "-c", script)
    start = time.monotonic()
    await api.post(f"/v1/tasks/{task['id']}/cancel?force=true", headers=WRITER)
    done = await wait_terminal(api, task["id"])
    assert done["status"] == "cancelled" and time.monotonic() - start < 0.9


async def test_max_concurrent_queues(aiohttp_client: Any, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"providers": {"local": {"max_concurrent": 1}}})
    api = await aiohttp_client(create_app(cfg))
    first = await submit_local(api, "sleep", "0.3")
    second = await submit_local(api, "echo", "second")
    assert first["status"] == "running"
    assert second["status"] == "queued"
    assert (await wait_terminal(api, second["id"]))["status"] == "succeeded"
    done_first = await wait_terminal(api, first["id"])
    assert done_first["finished_at"] <= (await wait_terminal(api, second["id"]))["started_at"]
    # a queued task can be cancelled before it starts
    third = await submit_local(api, "sleep", "0.5")
    fourth = await submit_local(api, "echo", "never")
    resp = await api.post(f"/v1/tasks/{fourth['id']}/cancel", headers=WRITER)
    assert (await resp.json())["status"] == "cancelled"
    await wait_terminal(api, third["id"])
    out = await (await api.get(f"/v1/tasks/{fourth['id']}/logs", headers=WRITER)).text()
    assert out == ""


async def test_a_process_being_started_holds_its_slot(aiohttp_client: Any, tmp_path: Path) -> None:
    """Submits that arrive together, while the first one's process is still being started:
    only that one runs (``max_concurrent: 1``), the others queue behind it."""
    cfg = make_config(tmp_path, {"providers": {"local": {"max_concurrent": 1}}})
    api = await aiohttp_client(create_app(cfg))
    tasks = await asyncio.gather(*(submit_local(api, "sleep", "0.2") for _ in range(4)))
    assert sorted(t["status"] for t in tasks) == ["queued", "queued", "queued", "running"]
    done = [await wait_terminal(api, t["id"]) for t in tasks]
    spans = sorted((d["started_at"], d["finished_at"]) for d in done)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # one at a time


async def test_allowlist(aiohttp_client: Any, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"providers": {"local": {"allowed_commands": ["echo"]}}})
    api = await aiohttp_client(create_app(cfg))
    assert (await submit_local(api, "echo", "ok"))["status"] in ("running", "succeeded")
    resp = await api.post(
        "/v1/tasks",
        json={"provider": "local", "task": {"command": "rm", "args": ["-rf", "/"]}},
        headers=WRITER,
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["details"]["field"] == "task.command"


async def test_timeout_ends_timed_out(api: TestClient[web.Request, web.Application]) -> None:
    task = await submit_local(api, "sleep", "30", timeout_s=0.3)
    done = await wait_terminal(api, task["id"])
    assert done["status"] == "timed_out"
    assert done["reason"] == "timed out after 0.3s"
    events = (await (await api.get(f"/v1/tasks/{task['id']}/events", headers=WRITER)).json())[
        "events"
    ]
    kinds = [(e["kind"], e["status"], e["applied"]) for e in events]
    assert ("timed_out", "timed_out", True) in kinds
    # the process's own end (killed by the timeout's cancel) is recorded, not applied
    await asyncio.sleep(0.3)
    events = (await (await api.get(f"/v1/tasks/{task['id']}/events", headers=WRITER)).json())[
        "events"
    ]
    assert events[-1]["kind"] == "observed" and events[-1]["applied"] is False
    assert events[-1]["data"]["observed"] == "cancelled"


async def test_restart_marks_orphaned_tasks_failed(
    aiohttp_client: Any, cfg: Config, monkeypatch: Any
) -> None:
    app = create_app(cfg)
    api = await aiohttp_client(app)
    task = await submit_local(api, "sleep", "30")
    pid = int(task["upstream"]["id"])
    # a gateway that dies without cleanup (SIGKILL) leaves its task running: simulate by
    # stopping the provider from stopping or recording anything, then reopen on the same database
    from egw.web.keys import service_key

    async def killed() -> None:
        """The old gateway's memory is gone: it stops nothing and waits for nothing."""

    monkeypatch.setattr(app[service_key].providers["local"], "close", killed)
    await api.close()
    api2 = await aiohttp_client(create_app(cfg))
    done = await wait_terminal(api2, task["id"])
    assert done["status"] == "failed" and done["reason"] == "gateway restarted"
    # the leftover process (same pid, same start time) was stopped
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break  # gone (and reaped)
        if state == "Z":
            break  # dead, waiting to be reaped by its parent
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the leftover process is still running")


async def test_a_queued_task_with_output_is_not_run_again_after_a_restart(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """A gateway killed after a queued task's process wrote (and exited) but before its
    pid and ``running`` were recorded: the task has output, so it did start; the restart
    ends it ``failed: gateway restarted`` rather than run it a second time."""
    from egw.web.keys import service_key

    cfg = make_config(tmp_path, {"providers": {"local": {"max_concurrent": 1}}})
    app = create_app(cfg)
    api = await aiohttp_client(app)
    await submit_local(api, "sleep", "30")
    queued = await submit_local(api, "sh", "-c", "echo ran >> " + str(tmp_path / "runs"))
    assert queued["status"] == "queued"
    service = app[service_key]
    await service.store.writer.append_log(queued["id"], "stdout", b"ran\n")

    async def killed() -> None:
        """The old gateway's memory is gone: it stops nothing and waits for nothing."""

    monkeypatch.setattr(service.providers["local"], "close", killed)
    await api.close()
    api2 = await aiohttp_client(create_app(cfg))
    done = await wait_terminal(api2, queued["id"])
    assert (done["status"], done["reason"]) == ("failed", "gateway restarted")
    assert not (tmp_path / "runs").exists()  # not run again


async def test_close_waits_for_its_processes_and_records_why(
    aiohttp_client: Any, cfg: Config
) -> None:
    api = await aiohttp_client(create_app(cfg))
    running = await submit_local(api, "sleep", "30")
    start = time.monotonic()
    await api.close()
    assert time.monotonic() - start < 5  # SIGTERM ended it at once
    api2 = await aiohttp_client(create_app(cfg))
    done = await (await api2.get(f"/v1/tasks/{running['id']}", headers=WRITER)).json()
    assert done["status"] == "failed" and done["reason"] == "gateway stopped while the task ran"
    assert done["exit_code"] == -15
