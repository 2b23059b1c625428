"""Point 1: ``allowed_commands`` pins what executes. The three bypasses (a task ``PATH``,
``LD_PRELOAD``, a ``cwd`` holding its own ``./deploy.sh``) are refused, and what runs is the
program the allowlist resolved when the config was loaded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, wait_terminal

from egw.config import LocalConfig
from egw.errors import ConfigError, Forbidden
from egw.providers.local import LocalProvider
from egw.web.app import create_app

Api = TestClient[web.Request, web.Application]


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    """A directory with an ``echo`` and a ``deploy.sh`` that leave a mark if they ever run."""
    folder = tmp_path / "evil"
    folder.mkdir()
    for name in ("echo", "deploy.sh"):
        script = folder / name
        script.write_text(f"#!/bin/sh\ntouch {tmp_path}/pwned-{name}\n")
        script.chmod(0o755)
    return folder


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The gateway's working directory, holding the real ``./deploy.sh``."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "deploy.sh").write_text("#!/bin/sh\necho deployed from $(pwd)\n")
    (folder / "deploy.sh").chmod(0o755)
    (folder / "sub").mkdir()
    monkeypatch.chdir(folder)
    return folder


async def _post(api: Api, task: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await api.post("/v1/tasks", json={"provider": "local", "task": task}, headers=WRITER)
    return resp.status, await resp.json()


async def test_the_three_bypasses_are_refused(
    aiohttp_client: Any, tmp_path: Path, evil: Path, app_dir: Path
) -> None:
    allowed = {"allowed_commands": ["echo", "./deploy.sh"]}
    api = await aiohttp_client(create_app(make_config(tmp_path, {"providers": {"local": allowed}})))

    status, body = await _post(api, {"command": "echo", "env": {"PATH": str(evil)}})
    assert status == 403, body
    assert body["error"]["details"]["field"] == "task.env.PATH"

    status, body = await _post(api, {"command": "echo", "env": {"LD_PRELOAD": "/x/pre.so"}})
    assert status == 403, body
    assert body["error"]["details"]["field"] == "task.env.LD_PRELOAD"

    status, body = await _post(api, {"command": "./deploy.sh", "cwd": str(evil)})
    assert status == 403, body
    assert body["error"]["details"]["field"] == "task.cwd"

    assert not list(tmp_path.glob("pwned-*")), "an evil program ran"


async def test_the_pinned_program_runs_whatever_the_task_says(
    aiohttp_client: Any, tmp_path: Path, evil: Path, app_dir: Path
) -> None:
    local = {"allowed_commands": ["echo", "./deploy.sh"], "allowed_cwd": [str(app_dir)]}
    api = await aiohttp_client(create_app(make_config(tmp_path, {"providers": {"local": local}})))
    # ./deploy.sh is the gateway directory's script, also when the task starts elsewhere
    status, task = await _post(api, {"command": "./deploy.sh", "cwd": str(app_dir / "sub")})
    assert status == 202, task
    assert (await wait_terminal(api, task["id"]))["status"] == "succeeded"
    out = await (await api.get(f"/v1/tasks/{task['id']}/logs", headers=WRITER)).text()
    assert out == f"deployed from {app_dir / 'sub'}\n"
    # `..` and symlinks are resolved before the check
    os.symlink(evil, app_dir / "link")
    for cwd in (f"{app_dir}/sub/../../evil", str(app_dir / "link")):
        status, body = await _post(api, {"command": "./deploy.sh", "cwd": cwd})
        assert status == 403 and body["error"]["details"]["field"] == "task.cwd", cwd
    # an env that changes nothing about what loads is still fine
    status, task = await _post(api, {"command": "echo", "args": ["hi"], "env": {"CI": "1"}})
    assert status == 202
    assert (await wait_terminal(api, task["id"]))["status"] == "succeeded"
    assert not list(tmp_path.glob("pwned-*"))


def test_commands_resolve_at_load_against_the_gateways_path(tmp_path: Path, app_dir: Path) -> None:
    cfg = LocalConfig(allowed_commands=["echo", "./deploy.sh"])
    assert cfg.commands() == {
        "echo": os.path.abspath(shutil.which("echo") or ""),
        "./deploy.sh": str(app_dir / "deploy.sh"),
    }
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, {"providers": {"local": {"allowed_commands": ["echo", "nope-x"]}}})
    assert err.value.path == "providers.local.allowed_commands[1]"
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, {"providers": {"local": {"allowed_cwd": [str(tmp_path / "no")]}}})
    assert err.value.path == "providers.local.allowed_cwd[0]"


@pytest.mark.parametrize(
    "name",
    ["PATH", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES", "PYTHONPATH", "PERL5OPT", "BASH_ENV"],
)
def test_deny_list_and_env_allowlist(name: str) -> None:
    local = LocalProvider(LocalConfig(allowed_commands=["echo"]))
    with pytest.raises(Forbidden) as err:
        local.validate({"command": "echo", "env": {name: "x"}})
    assert err.value.details["field"] == f"task.env.{name}"
    assert local.validate({"command": "echo", "env": {"PYTHONUNBUFFERED": "1"}}).env
    strict = LocalProvider(LocalConfig(allowed_commands=["echo"], allowed_env=["CI"]))
    assert strict.validate({"command": "echo", "env": {"CI": "1"}}).env == {"CI": "1"}
    with pytest.raises(Forbidden):
        strict.validate({"command": "echo", "env": {"COLOR": "1"}})
    # without an allowlist nothing is pinned: the task's env is its own business
    assert LocalProvider(LocalConfig()).validate({"command": "echo", "env": {name: "x"}}).env
