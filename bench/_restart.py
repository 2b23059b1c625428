"""Bench part ``restart``: ``egw serve`` on a database of an organisation's history.

The database is built here, fast, with egw's own schema (the migrations, applied by
`egw.store.Store`) and rows (`egw.store.rows.task_to_row`, `event_to_row` and the
statements of `egw.store.statements`): ``tasks`` Nomad tasks with ``events`` events between
them, ``unfinished`` of them still running. Nomad is a stand-in (bench/_nomad_stream.py's
replayer) that knows every job and says nothing new. Measured from starting ``egw serve``
(pinned on the server CPU):

* ready: ``/readyz`` answers 200;
* re-attached: the Nomad provider follows every unfinished task and has read each one from
  Nomad once (``/readyz``: ``tracked_tasks`` = unfinished and ``resuming`` = 0);
* memory: the gateway's RSS once re-attached, against the same start on a database holding
  only the unfinished tasks (the ceiling): what finished tasks cost, per finished task.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GOAL_S = 5.0
HERE = Path(__file__).resolve().parent


def _job_id(n: int) -> str:
    """The job of the ``n``-th task (unfinished ones from 0, finished ones below)."""
    return f"job-{n:07d}" if n >= 0 else f"done-{-n:07d}"


def build(path: Path, *, tasks: int, events: int, unfinished: int) -> float:
    """Write the database; returns the seconds it took."""
    from egw.core.model import Event, Task, TaskState
    from egw.store import Store, statements
    from egw.store import rows as egw_rows
    from egw.wire import nomad as wire

    started = time.monotonic()

    async def schema() -> None:
        store = Store(str(path))
        await store.open()
        await store.close()

    asyncio.run(schema())
    now = datetime.now(UTC)
    per_task = max(1, events // tasks)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    task_rows: list[tuple[Any, ...]] = []
    event_rows: list[tuple[Any, ...]] = []
    seq = 0
    for n in range(tasks):
        live = n >= tasks - unfinished
        job_id = _job_id(n - (tasks - unfinished))
        spec = wire.validate_task(
            {"job_id": job_id, "image": "busybox", "command": "true"},
            namespace="default",
            region=None,
            datacenters=["*"],
        )
        status = TaskState.RUNNING if live else TaskState.SUCCEEDED
        task_id = f"t_{n:032x}"
        upstream = {
            "job_id": job_id,
            "namespace": "default",
            "region": None,
            "job_modify_index": 1,
            "eval_id": None,
            "expected": 1,
        }
        for i in range(per_task):
            seq += 1
            kind = "submitted" if i == 0 else "observed"
            at = TaskState.SUCCEEDED if (i == per_task - 1 and not live) else TaskState.RUNNING
            event = Event(
                seq=seq,
                task_id=task_id,
                provider="nomad",
                kind=kind,
                status=TaskState.PENDING if i == 0 else at,
                prev_status=None,
                applied=i < 3,
                reason="allocation running",
                exit_code=None,
                actor=None,
                source="nomad",
                at=now,
                data={"alloc_id": f"{n:08x}-0000-4000-8000-000000000000"},
            )
            event_rows.append(egw_rows.event_to_row(event, f"nomad:{task_id}:{i}"))
        task = Task(
            id=task_id,
            provider="nomad",
            spec=spec.to_json(),
            status=status,
            upstream_id=job_id,
            upstream=upstream,
            created_at=now,
            updated_at=now,
            started_at=now,
            finished_at=None if live else now,
            index=seq,
            logs_complete=not live,
            submit_seq=n + 1,
        )
        task_rows.append(egw_rows.task_to_row(task))
        if len(event_rows) >= 50_000:
            conn.executemany(statements.INSERT_EVENTS, event_rows)
            conn.executemany(statements.UPSERT_TASKS, task_rows)
            event_rows.clear()
            task_rows.clear()
    conn.executemany(statements.INSERT_EVENTS, event_rows)
    conn.executemany(statements.UPSERT_TASKS, task_rows)
    conn.executemany(statements.UPSERT_CURSORS, [("nomad:event_index:default", "100")])
    conn.commit()
    conn.close()
    return time.monotonic() - started


def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _start(workdir: Path, db: Path, nomad: str, cpu: int | None, want: int) -> dict[str, Any]:
    """One ``egw serve``: seconds to ready and to re-attached, RSS then."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {
        "server": {"host": "127.0.0.1", "port": port},
        "auth": {
            "tokens": [
                {"name": "b", "token": "bench-token-0123456789abcdef", "scopes": ["tasks:read"]}
            ]
        },
        "storage": {"path": str(db)},
        "providers": {"nomad": {"enabled": True, "address": nomad}},
        "logging": {"level": "warning", "format": "json"},
    }
    cfg_path = workdir / f"{db.stem}.yaml"
    cfg_path.write_text(json.dumps(cfg))  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    log = open(workdir / f"{db.stem}.log", "wb")  # noqa: SIM115 - closed below
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "egw", "serve", "--config", str(cfg_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )
    base = f"http://127.0.0.1:{port}"
    ready = attached = None
    body: dict[str, Any] = {}
    try:
        deadline = started + 120
        while time.monotonic() < deadline and proc.poll() is None:
            status, body = _readyz(base)
            now = time.monotonic()
            if status == 200 and ready is None:
                ready = now - started
            nomad_health = (body.get("providers") or {}).get("nomad") or {}
            if (
                ready is not None
                and nomad_health.get("tracked_tasks") == want
                and nomad_health.get("resuming") == 0
            ):
                attached = now - started
                break
            time.sleep(0.02)
        rss = _rss_kb(proc.pid) if proc.poll() is None else 0
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    if attached is None:
        tail = (workdir / f"{db.stem}.log").read_bytes()[-1500:].decode("utf-8", "replace")
        raise RuntimeError(f"not re-attached (ready after {ready} s): {body}\n{tail}")
    return {"ready_s": round(ready or 0, 3), "attached_s": round(attached, 3), "rss_kb": rss}


async def _nomad(jobs: tuple[str, ...]) -> tuple[Any, str]:
    from _nomad_stream import Replayer
    from aiohttp import web

    replayer = Replayer([], jobs=jobs)
    runner = web.AppRunner(replayer.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _starts(
    workdir: Path, big: Path, small: Path, cpu: int | None, unfinished: int
) -> dict[str, Any]:
    runner, nomad = await _nomad(tuple(_job_id(n) for n in range(unfinished)))
    loop = asyncio.get_running_loop()
    try:
        return {
            "big": await loop.run_in_executor(None, _start, workdir, big, nomad, cpu, unfinished),
            "small": await loop.run_in_executor(
                None, _start, workdir, small, nomad, cpu, unfinished
            ),
        }
    finally:
        await runner.cleanup()


def run(workdir: Path, cpus: dict[str, int | None], *, quick: bool) -> dict[str, Any]:
    tasks, events, unfinished = (2_000, 20_000, 200) if quick else (100_000, 1_000_000, 10_000)
    big, small = workdir / "restart-big.db", workdir / "restart-small.db"
    built = build(big, tasks=tasks, events=events, unfinished=unfinished)
    build(small, tasks=unfinished, events=unfinished * (events // tasks), unfinished=unfinished)
    result: dict[str, Any] = {
        "tasks": tasks,
        "events": events,
        "unfinished": unfinished,
        "build_s": round(built, 1),
        "db_mb": round(big.stat().st_size / 1e6, 1),
    }
    if cpus.get("load") is not None:
        os.sched_setaffinity(0, {cpus["load"]})  # the stand-in Nomad: the load CPU
    result.update(asyncio.run(_starts(workdir, big, small, cpus.get("server"), unfinished)))
    finished = tasks - unfinished
    extra = result["big"]["rss_kb"] - result["small"]["rss_kb"]
    result["rss_bytes_per_finished_task"] = round(extra * 1024 / finished, 1)
    return result


def render(part: dict[str, Any]) -> list[str]:
    if "error" in part:
        return [f"Restart: error {part['error']}"]
    big, small = part["big"], part["small"]
    met = big["attached_s"] <= GOAL_S
    return [
        f"Restart: {part['tasks']} tasks ({part['unfinished']} unfinished), {part['events']}"
        f" events, {part['db_mb']} MB (built in {part['build_s']} s)",
        f"  egw serve: ready after {big['ready_s']} s, every unfinished task re-attached after"
        f" {big['attached_s']} s; RSS {big['rss_kb'] / 1024:.1f} MB",
        f"  ceiling (the unfinished tasks alone): ready {small['ready_s']} s, re-attached"
        f" {small['attached_s']} s, RSS {small['rss_kb'] / 1024:.1f} MB;"
        f" finished tasks cost {part['rss_bytes_per_finished_task']} bytes of RSS each",
        f"  goal: re-attached within {GOAL_S:.0f} s: {big['attached_s']} s:"
        f" {'met' if met else 'NOT met'}",
    ]
