"""Point 3: one failed write must not strand a task.

A real local task prints output through the API while the database's disk is full
(SQLite's ``max_page_count`` on the writer's connection: the pages it has, no more;
raised again when "space returns"). The task must end ``failed`` with the reason, its
process must be gone, ``/readyz`` must answer 503 (``database: false`` and why) while
writes fail and 200 once they succeed again, all by itself, and nothing committed
before may be lost.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import READER, make_config, submit_local, wait_for, wait_terminal

from egw.web.app import create_app
from egw.web.keys import service_key

pytestmark = pytest.mark.sqlite_only(
    reason="a full disk made with SQLite's max_page_count (PostgreSQL refusing writes: tests/store)"
)

Client = TestClient[web.Request, web.Application]

#: prints a line, then 64 KiB lines forever (until it is stopped)
CHATTY = (
    "import sys, time\n"
    "print('started', flush=True)\n"
    "while True:\n"
    "    sys.stdout.write('x' * 65535 + '\\n'); sys.stdout.flush(); time.sleep(0.01)\n"
)


async def readyz(api: Client) -> tuple[int, dict[str, Any]]:
    resp = await api.get("/readyz")
    body: dict[str, Any] = await resp.json()
    return resp.status, body


async def until(check: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def no_page_more(conn: sqlite3.Connection) -> None:
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {int(pages)}")


async def test_disk_full_fails_the_task_stops_its_process_and_recovers(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    app = create_app(make_config(tmp_path))
    api: Client = await aiohttp_client(app)
    writer = app[service_key].store.writer
    writer.retry_s, writer.retry_first_s, writer.retry_max_s = 0.5, 0.02, 0.1
    writer.probe_s = 0.1

    task = await submit_local(api, sys.executable, "-c", CHATTY)
    running = await wait_for(api, task["id"], lambda t: t["upstream"]["id"] is not None)
    pid = int(running["upstream"]["id"])

    async def printed() -> bool:
        cached = writer.cached(task["id"])
        return cached is not None and cached.log_size > 200_000

    await until(printed, "the task's first output")
    resp = await api.get(f"/v1/tasks/{task['id']}/logs", headers=READER)
    committed = await resp.read()
    assert committed.startswith(b"started\n") and len(committed) >= 200_000

    # the disk is full: no page more for the database
    # (on the write connection's own thread, the only one that may use it)
    thread = app[service_key].store._wthread
    assert thread is not None
    await thread.run(no_page_more)

    async def not_ready() -> dict[str, Any] | None:
        status, body = await readyz(api)
        return body if status == 503 else None

    body = await until(not_ready, "/readyz to answer 503")
    assert body["database"] is False and body["status"] == "not_ready"
    assert body["storage"]["writable"] is False
    assert body["storage"]["error"] == "database or disk is full"
    # the task's processes are stopped, not left running unwatched
    await until(lambda: asyncio.sleep(0, result=not alive(pid)), "the task's process to end")

    # space returns: everything recovers by itself
    await thread.run(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823").close())
    final = await wait_terminal(api, task["id"])
    assert final["status"] == "failed"
    assert final["reason"] == "the task's output could not be stored: database or disk is full"

    async def ready() -> dict[str, Any] | None:
        status, body = await readyz(api)
        return body if status == 200 else None

    body = await until(ready, "/readyz to answer 200 again")
    assert body["database"] is True and body["storage"]["error"] is None

    # nothing committed before the disk filled is lost
    resp = await api.get(f"/v1/tasks/{task['id']}/logs", headers=READER)
    assert resp.headers["X-Egw-Complete"] == "true"
    after = await resp.read()
    assert after[: len(committed)] == committed
    resp = await api.get(f"/v1/tasks/{task['id']}/events", headers=READER)
    events = (await resp.json())["events"]
    applied = [e for e in events if e["applied"] and e["status"] == "failed"]
    assert len(applied) == 1 and applied[0]["source"] == "gateway"

    # and the gateway runs new work again
    again = await submit_local(api, "echo", "back")
    done = await wait_terminal(api, again["id"])
    assert done["status"] == "succeeded"
    resp = await api.get(f"/v1/tasks/{again['id']}/logs", headers=READER)
    assert await resp.read() == b"back\n"
