"""Test helpers: tokens, configs on a temporary database, and task helpers.

``make_config(tmp_path, {...})`` merges overrides into a config dict and parses
it exactly as `egw serve` would; ``READER``, ``WRITER`` and ``ADMIN`` are header
dicts for the three scopes (the ``api`` fixture in conftest.py is a test client
of `create_app` on such a config).
"""

from __future__ import annotations

import asyncio
import copy
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import db_support
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from egw.config import Config, parse_config

WRITER_TOKEN = "writer-token-0123456789"
READER_TOKEN = "reader-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789ab"
WRITER = {"Authorization": f"Bearer {WRITER_TOKEN}"}
READER = {"Authorization": f"Bearer {READER_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _storage(tmp_path: Path) -> dict[str, Any]:
    """The test's SQLite file; with ``EGW_TEST_STORE=postgresql``, a PostgreSQL database of
    its own (`db_support.store_url`)."""
    out: dict[str, Any] = {"path": str(tmp_path / "egw.db")}
    if db_support.STORE == "postgresql":
        out["url"] = db_support.store_url(tmp_path)
    return out


def config_dict(tmp_path: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    base = {
        "server": {"sse_flush_ms": 10},
        "storage": _storage(tmp_path),
        "auth": {
            "tokens": [
                {"name": "writer", "token": WRITER_TOKEN, "scopes": ["tasks:read", "tasks:write"]},
                {"name": "reader", "token": READER_TOKEN, "scopes": ["tasks:read"]},
                {"name": "admin", "token": ADMIN_TOKEN, "scopes": ["admin"]},
            ]
        },
        "retry": {"attempts": 3, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, "deadline_s": 5},
        "providers": {"local": {"kill_grace_s": 1}},
    }
    return _merge(base, overrides or {})


def make_config(tmp_path: Path, overrides: dict[str, Any] | None = None) -> Config:
    return parse_config(config_dict(tmp_path, overrides), {})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_for(
    api: TestClient[web.Request, web.Application],
    task_id: str,
    done: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """Follow the task with blocking queries until ``done(task)``."""
    index = 0
    for _ in range(200):
        resp = await api.get(f"/v1/tasks/{task_id}?index={index}&wait=5s", headers=WRITER)
        assert resp.status == 200, await resp.text()
        task: dict[str, Any] = await resp.json()
        if done(task):
            return task
        index = task["index"]
    raise AssertionError(f"task {task_id} did not get there: {task}")


async def wait_terminal(
    api: TestClient[web.Request, web.Application], task_id: str
) -> dict[str, Any]:
    return await wait_for(api, task_id, lambda t: t["status"] in TERMINAL)


async def wait_status(
    api: TestClient[web.Request, web.Application], task_id: str, status: str
) -> dict[str, Any]:
    return await wait_for(api, task_id, lambda t: t["status"] == status)


async def submit(
    api: TestClient[web.Request, web.Application], body: dict[str, Any]
) -> dict[str, Any]:
    resp = await api.post("/v1/tasks", json=body, headers=WRITER)
    assert resp.status == 202, await resp.text()
    task: dict[str, Any] = await resp.json()
    return task


async def submit_local(
    api: TestClient[web.Request, web.Application], *argv: str, **extra: Any
) -> dict[str, Any]:
    body = {"provider": "local", "task": {"command": argv[0], "args": list(argv[1:])}, **extra}
    return await submit(api, body)


async def sse_frames(
    resp: Any, stop: Callable[[dict[str, str]], bool] | None = None
) -> list[dict[str, str]]:
    """Parse an event stream into frames (``{"id", "event", "data", ...}``), until ``stop``
    says so for a frame, or the stream ends. Comment lines (keep-alives) are skipped."""
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if current:
                out.append(current)
                if stop is not None and stop(current):
                    return out
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value
    return out


class GatewayProcess:
    """`egw serve` as a real process on a free loopback port, with a config built from
    `config_dict` (plus ``overrides``), its output in ``gateway.log`` under ``tmp_path``."""

    def __init__(self, tmp_path: Path, overrides: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "config.yaml"
        self.config.write_text(yaml.safe_dump(config_dict(tmp_path, overrides)))
        self.log = tmp_path / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "egw",
                    "serve",
                    "--config",
                    str(self.config),
                    "--port",
                    str(self.port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"gateway did not start: {self.tail()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, size: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-size:]


async def sse_frames_for(resp: Any, seconds: float) -> list[dict[str, str]]:
    """The frames an event stream sends within ``seconds`` (to show what it does *not* send)."""
    out: list[dict[str, str]] = []

    def keep(frame: dict[str, str]) -> bool:
        out.append(frame)
        return False

    try:
        await asyncio.wait_for(sse_frames(resp, keep), timeout=seconds)
    except TimeoutError:
        pass
    return out
