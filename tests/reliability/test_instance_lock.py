"""One gateway per database (issue 11, point 2), with real `egw serve` processes.

A second `egw serve` on a database another one is using must leave that one's work
alone and exit non-zero with one line naming it, whether it asked for the same port or
another; `egw migrate` is refused the same way; the lock goes with the process that
held it, even after kill -9; and a gateway whose port is taken stops before it has
touched its database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import WRITER, GatewayProcess, free_port

pytestmark = pytest.mark.sqlite_only(
    reason="the flock of the database file (PostgreSQL's lock: tests/store/test_pg_gateway.py)"
)


@pytest.fixture
def first(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path)
    gw.start()
    yield gw
    gw.stop()


def egw(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "egw", *args], capture_output=True, text=True, timeout=timeout
    )


def call(gw: GatewayProcess, method: str, path: str, body: Any = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {**WRITER, "Content-Type": "application/json"}
    req = urllib.request.Request(gw.url + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=15) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def wait_until_done(gw: GatewayProcess, task_id: str) -> dict[str, Any]:
    task = call(gw, "GET", f"/v1/tasks/{task_id}")
    while task["status"] not in ("succeeded", "failed", "cancelled", "timed_out"):
        task = call(gw, "GET", f"/v1/tasks/{task_id}?index={task['index']}&wait=10s")
    return task


def refused(result: subprocess.CompletedProcess[str], holder: GatewayProcess, db: Path) -> None:
    """Exit code 1, and one line naming the holder's pid and the lock file; nothing else."""
    assert holder.proc is not None
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("egw: ")
    assert f"pid {holder.proc.pid}" in result.stderr
    assert f"lock file {db}.lock" in result.stderr


@pytest.mark.parametrize("port", ["same port", "another port"])
def test_a_second_gateway_on_the_database_is_refused_and_the_first_keeps_its_task(
    first: GatewayProcess, tmp_path: Path, port: str
) -> None:
    task = call(
        first,
        "POST",
        "/v1/tasks",
        {"provider": "local", "task": {"command": "sh", "args": ["-c", "sleep 1.5; echo done"]}},
    )
    assert task["status"] == "running"

    second_port = first.port if port == "same port" else free_port()
    second = egw("serve", "--config", str(first.config), "--port", str(second_port))
    refused(second, first, tmp_path / "egw.db")

    # the first gateway's task was neither killed nor marked failed: it ends by itself
    done = wait_until_done(first, task["id"])
    assert done["status"] == "succeeded", done
    assert call(first, "GET", "/readyz")["status"] == "ready"
    log = first.tail(200_000)
    assert "IntegrityError" not in log and "UNIQUE constraint" not in log
    assert "leftover" not in log


def test_migrate_is_refused_while_a_gateway_runs(first: GatewayProcess, tmp_path: Path) -> None:
    refused(egw("migrate", "--config", str(first.config)), first, tmp_path / "egw.db")
    first.stop()
    after = egw("migrate", "--config", str(first.config))
    assert after.returncode == 0 and after.stdout.endswith("up to date\n"), after


def test_the_lock_goes_with_its_process_on_stop_and_on_kill_9(
    first: GatewayProcess, tmp_path: Path
) -> None:
    lock = tmp_path / "egw.db.lock"
    assert first.proc is not None
    assert lock.read_text() == f"{first.proc.pid}\n"

    first.stop()  # SIGTERM: released (and the pid cleared)
    assert first.proc.returncode == 0
    assert lock.read_text() == ""
    first.start()
    assert lock.read_text() == f"{first.proc.pid}\n"

    first.kill()  # SIGKILL: the kernel drops a flock with its process
    first.start()
    assert lock.read_text() == f"{first.proc.pid}\n"


def test_a_taken_port_stops_the_gateway_before_it_touches_its_database(
    first: GatewayProcess, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    config = other / "config.yaml"
    config.write_text(first.config.read_text().replace(str(tmp_path / "egw.db"), str(other / "db")))
    started = time.monotonic()
    result = egw("serve", "--config", str(config), "--port", str(first.port))
    assert result.returncode == 1, result
    assert result.stderr == f"egw: 127.0.0.1:{first.port}: Address already in use\n"
    assert time.monotonic() - started < 10
    # no migration ran, no provider started: the database file was never created
    assert sorted(os.listdir(other)) == ["config.yaml", "db.lock"]
    assert "listening" not in result.stderr
