"""`egw serve` as a real process: the CLI end to end, and a SIGKILL during a burst of submits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import WRITER, WRITER_TOKEN, GatewayProcess


class Gateway(GatewayProcess):
    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "EGW_URL": self.url, "EGW_TOKEN": WRITER_TOKEN}
        return subprocess.run(
            [sys.executable, "-m", "egw", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path)
    gw.start()
    yield gw
    gw.stop()


def test_cli_end_to_end(gateway: Gateway) -> None:
    submitted = gateway.cli("submit", "--json", "--", "sh", "-c", "echo out; echo err >&2; exit 0")
    assert submitted.returncode == 0, submitted.stderr
    task = json.loads(submitted.stdout)
    follow = gateway.cli("logs", task["id"], "-f")
    assert follow.returncode == 0
    assert follow.stdout == "out\n" and follow.stderr == "err\n"
    status = gateway.cli("status", task["id"], "--wait")
    assert status.returncode == 0 and "succeeded" in status.stdout

    failing = gateway.cli("submit", "--follow", "--", "sh", "-c", "echo bye; exit 5")
    assert failing.returncode == 5 and failing.stdout == "bye\n"
    assert "task failed: exit code 5" in failing.stderr

    long = json.loads(gateway.cli("submit", "--json", "--name", "nap", "--", "sleep", "30").stdout)
    cancelled = gateway.cli("cancel", long["id"])
    assert cancelled.returncode == 0 and "cancelling" in cancelled.stdout
    waited = gateway.cli("status", long["id"], "--wait")
    assert waited.returncode == 125 and "cancelled" in waited.stdout

    listed = gateway.cli("tasks", "--status", "cancelled")
    assert long["id"] in listed.stdout and task["id"] not in listed.stdout
    missing = gateway.cli("status", "t_missing")
    assert missing.returncode == 121 and "not_found" in missing.stderr
    denied = subprocess.run(
        [
            sys.executable,
            "-m",
            "egw",
            "tasks",
            "--url",
            gateway.url,
            "--token",
            "wrong-token-000000",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert denied.returncode == 121 and "unauthorized" in denied.stderr


def test_sigkill_during_a_burst_loses_no_acknowledged_task(gateway: Gateway) -> None:
    acknowledged: dict[str, str] = {}

    async def burst() -> None:
        async with aiohttp.ClientSession(headers=WRITER) as session:

            async def one(i: int) -> None:
                body = {"provider": "local", "task": {"command": "true"}, "name": f"burst-{i}"}
                try:
                    async with session.post(
                        f"{gateway.url}/v1/tasks", json=body, headers={"Idempotency-Key": f"k{i}"}
                    ) as resp:
                        if resp.status == 202:
                            acknowledged[f"k{i}"] = (await resp.json())["id"]
                except (TimeoutError, aiohttp.ClientError):
                    pass  # in flight when the gateway died: not acknowledged

            running = [asyncio.create_task(one(i)) for i in range(400)]
            # kill it mid-burst: some answers are in, many requests are still in flight
            for _ in range(400):
                if len(acknowledged) >= 20:
                    break
                await asyncio.sleep(0.01)
            gateway.kill()
            await asyncio.gather(*running)

    asyncio.run(burst())
    assert acknowledged, "the gateway acknowledged nothing before it was killed"
    gateway.start()

    async def check() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession(headers=WRITER) as session:
            tasks: list[dict[str, Any]] = []
            cursor = None
            while True:
                url = f"{gateway.url}/v1/tasks?limit=500" + (f"&cursor={cursor}" if cursor else "")
                async with session.get(url) as resp:
                    page = await resp.json()
                tasks.extend(page["tasks"])
                cursor = page["next_cursor"]
                if not cursor:
                    return tasks

    tasks = asyncio.run(check())
    ids = [t["id"] for t in tasks]
    assert len(ids) == len(set(ids))
    for key, task_id in acknowledged.items():
        assert task_id in ids, f"acknowledged task {task_id} ({key}) is lost"
    # each acknowledged name appears once; nothing is left hanging after the restart
    names = [t["name"] for t in tasks]
    assert len(names) == len(set(names))
    deadline = time.monotonic() + 20
    while any(t["status"] not in ("succeeded", "failed", "cancelled", "timed_out") for t in tasks):
        assert time.monotonic() < deadline, [
            t for t in tasks if t["status"] in ("pending", "queued", "running")
        ][:3]
        time.sleep(0.2)
        tasks = asyncio.run(check())


def test_cli_prints_output_that_is_not_utf8_byte_for_byte(gateway: Gateway) -> None:
    """The store keeps bytes as written; `egw logs` and `egw logs -f` give them back exactly
    (SSE carries them in ``log-b64`` frames)."""
    script = r"printf 'ok \377\376 end\n'; printf 'caf\303\251\n'"
    submitted = gateway.cli("submit", "--json", "--", "sh", "-c", script)
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["id"]
    env = {**os.environ, "EGW_URL": gateway.url, "EGW_TOKEN": WRITER_TOKEN}
    expected = b"ok \xff\xfe end\ncaf\xc3\xa9\n"
    for args in (["logs", task_id, "-f"], ["logs", task_id]):
        done = subprocess.run(
            [sys.executable, "-m", "egw", *args], capture_output=True, env=env, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected


def test_requests_the_http_parser_refuses_get_json_from_egw_serve(gateway: Gateway) -> None:
    """`egw serve` runs the app on `EdgeRunner`: a request aiohttp's parser refuses (here a
    header line over its 8 KiB limit) is answered in egw's JSON error shape, not plain text."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(gateway.url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0].split()[1] == b"400", head
    assert b"application/json" in head
    assert json.loads(body)["error"]["code"] == "invalid_request"
