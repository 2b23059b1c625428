"""The commands people reach for next, on a real `egw serve`: `tasks` (repeatable
`--status`, `--label`, `--name`, `--cursor`/`--all`, exit code and duration columns, the
"more:" hint), `rerun` (linked both ways in the events), `events [-f]`, `watch`, each
with `--json`; and `logs` on an ended task whose output is not all in yet."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cli_support import CLIGateway, egw_env, running_gateway


@pytest.fixture
def cli_gateway(tmp_path: Path) -> Iterator[CLIGateway]:
    yield from running_gateway(tmp_path)


def submit(gw: CLIGateway, *args: str) -> dict[str, Any]:
    done = gw.cli("submit", "--json", *args)
    assert done.returncode == 0, done.stderr
    task: dict[str, Any] = json.loads(done.stdout)
    assert gw.cli("status", task["id"], "--wait").returncode in (0, 1, 4, 125)
    return task


def test_tasks_filters_pages_and_columns(cli_gateway: CLIGateway) -> None:
    gw = cli_gateway
    ok = submit(gw, "--name", "good", "--label", "team=a", "--", "true")
    bad = submit(gw, "--name", "bad", "--label", "team=b", "--", "sh", "-c", "exit 4")
    table = gw.cli("tasks", "--status", "failed", "--status", "succeeded")
    assert ok["id"] in table.stdout and bad["id"] in table.stdout
    header = table.stdout.splitlines()[0]
    assert "EXIT" in header and "DURATION" in header
    bad_row = next(line for line in table.stdout.splitlines() if bad["id"] in line)
    assert " 4 " in bad_row
    assert bad["id"] not in gw.cli("tasks", "--label", "team=a").stdout
    named = json.loads(gw.cli("tasks", "--name", "bad", "--json").stdout)
    assert [t["id"] for t in named["tasks"]] == [bad["id"]]
    first = gw.cli("tasks", "--limit", "1")
    assert bad["id"] in first.stdout and ok["id"] not in first.stdout
    assert first.stderr.startswith("more: --cursor ")
    cursor = first.stderr.split()[2]
    second = gw.cli("tasks", "--limit", "1", "--cursor", cursor)
    assert ok["id"] in second.stdout and "more:" not in second.stderr
    everything = json.loads(gw.cli("tasks", "--limit", "1", "--all", "--json").stdout)
    assert [t["id"] for t in everything["tasks"]] == [bad["id"], ok["id"]]


def test_rerun_links_both_tasks(cli_gateway: CLIGateway) -> None:
    gw = cli_gateway
    old = submit(gw, "--name", "again", "--label", "k=v", "--timeout", "60", "--", "echo", "hi")
    done = gw.cli("rerun", old["id"], "--follow")
    assert done.returncode == 0 and done.stdout == "hi\n", done.stderr
    new_id = done.stderr.splitlines()[0]
    new = json.loads(gw.cli("status", new_id, "--json").stdout)
    assert new_id != old["id"]
    assert (new["provider"], new["name"], new["labels"], new["timeout_s"]) == (
        "local",
        "again",
        {"k": "v"},
        60.0,
    )
    link = {"from": old["id"], "to": new_id}
    for task_id in (old["id"], new_id):
        lines = gw.cli("events", task_id, "--json").stdout.splitlines()
        reruns = [e for e in map(json.loads, lines) if e["kind"] == "rerun"]
        assert [e["data"] for e in reruns] == [link]
    assert "rerun" in gw.cli("events", old["id"]).stdout
    missing = gw.cli("rerun", "t_missing")
    assert missing.returncode == 121 and "not_found" in missing.stderr


def test_events_follow_until_the_task_ends(cli_gateway: CLIGateway) -> None:
    gw = cli_gateway
    task_id = gw.cli("submit", "-q", "--", "sleep", "1").stdout.strip()
    followed = gw.cli("events", task_id, "-f", timeout=20)
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    assert "submitted" in lines[0]
    assert lines[-1].split()[1] == "observed" and "running -> succeeded" in lines[-1]


def test_watch_prints_every_change(cli_gateway: CLIGateway) -> None:
    gw = cli_gateway
    task_id = gw.cli("submit", "-q", "--", "true").stdout.strip()
    proc = gw.popen("watch", "--json", "--after", "0")  # replayed from the start, then live
    assert proc.stdout is not None and proc.stderr is not None
    try:
        seen = [json.loads(proc.stdout.readline()) for _ in range(4)]
        assert [e["task_id"] for e in seen] == [task_id] * 4
        assert seen[-1]["status"] == "succeeded"
        later = gw.cli("submit", "-q", "--", "true").stdout.strip()
        assert json.loads(proc.stdout.readline())["task_id"] == later  # live
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


async def test_logs_waits_for_output_that_is_not_all_in() -> None:
    """A Cloud Run task ends before Cloud Logging has its output: the plain `GET …/logs`
    says ``X-Egw-Complete: false``; `egw logs` waits for the rest instead of printing a
    part as if it were all (a stand-in gateway plays that moment)."""
    task = {"id": "t_1", "status": "succeeded", "exit_code": 0, "reason": None}

    async def logs(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Accept") != "text/event-stream":
            headers = {"X-Egw-Complete": "false", "X-Egw-Offset": "6"}
            return web.Response(body=b"first\n", headers=headers)
        assert request.headers["Last-Event-ID"] == "6"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        frame = json.dumps({"stream": "stdout", "text": "second\n"})
        await resp.write(f"id: 13\nevent: log\ndata: {frame}\n\n".encode())
        end = json.dumps({"status": "succeeded", "task": task})
        await resp.write(f"event: end\ndata: {end}\n\n".encode())
        return resp

    async def get_task(request: web.Request) -> web.Response:
        return web.json_response(task)

    app = web.Application()
    app.router.add_get("/v1/tasks/t_1/logs", logs)
    app.router.add_get("/v1/tasks/t_1", get_task)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "egw",
            "logs",
            "t_1",
            env=egw_env(f"http://127.0.0.1:{port}", token="t" * 20),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, err
    assert out == b"first\nsecond\n"
