"""Bench part ``nomad-logs``: the output of thousands of running Nomad allocations.

The Nomad simulator (egw/testing/nomad, its own process on the load CPU, real time) runs
every job for an hour, printing three lines (the first at once). egw (pinned on the server
CPU) gets ``tasks`` Nomad tasks submitted through its API, 32 at a time. Measured:

* output: how many running tasks have output in egw's log store (its database, read-only),
  and how long after the last submit every one had some;
* live follows: the log streams egw followed live (``log_slots`` in ``/readyz``) against the
  budget ``log_max_followers``, and the catch-up reads;
* memory and idle CPU: the gateway's RSS with every task tracked, less its RSS before any
  task, per task; its CPU over ``idle_s`` seconds once every task has output and nothing
  changes (the catch-up reads go on: they are part of the idle cost).

The goals are ≤ 20 KB per tracked task and ≤ 5% of a core idle, every running task's output
stored. Round one's figures (2,000 tasks): +25 KB per task, 1.9% of a core, and of 843
running tasks only 50 with output after 20 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GOAL_KB = 20.0
GOAL_IDLE = 0.05


def _sim_main(ready: str) -> None:
    """The simulator process: every job runs an hour and prints three lines."""
    from egw.testing.nomad import NomadSimulator
    from egw.testing.nomad.script import Script

    async def serve() -> None:
        sim = NomadSimulator(time_scale=1.0)
        sim.cluster.default_script = Script(
            stdout=b"first line\nsecond line\nthird line\n",
            duration_s=3600,
            schedule_delay_s=0.01,
            start_delay_s=0.05,
        )
        base = await sim.start()
        Path(ready + ".tmp").write_text(base)
        os.replace(ready + ".tmp", ready)
        await asyncio.Event().wait()

    asyncio.run(serve())


def _start_sim(workdir: Path, cpu: int | None) -> tuple[subprocess.Popen[bytes], str]:
    ready = workdir / "nomad-sim.ready"
    cmd = [sys.executable, str(Path(__file__)), "sim", str(ready)]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    log = open(workdir / "nomad-sim.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the Nomad simulator did not start")
        time.sleep(0.05)
    return proc, ready.read_text()


async def _submit_all(base: str, token: str, n: int) -> list[str]:
    import aiohttp

    ids: list[str] = []
    queue = list(range(n))
    headers = {"Authorization": f"Bearer {token}"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            i = queue.pop()
            body = {
                "provider": "nomad",
                "task": {"job_id": f"logs-{i:05d}", "image": "busybox", "command": "sh"},
            }
            async with session.post(f"{base}/v1/tasks", json=body, headers=headers) as resp:
                data = await resp.json()
                if resp.status != 202:
                    raise RuntimeError(f"submit answered {resp.status}: {data}")
                ids.append(data["id"])

    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(32)))
    return ids


def _with_output(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT COUNT(DISTINCT task_id) FROM log_chunks").fetchone()
        return int(row[0])
    finally:
        conn.close()


def run(workdir: Path, cpus: dict[str, int | None], *, quick: bool) -> dict[str, Any]:
    import run as bench  # bench/run.py: the Server helper and the gateway's config

    n, idle_s = (40, 2.0) if quick else (10_000, 10.0)
    sim, nomad = _start_sim(workdir, cpus.get("load"))
    gw = None
    try:
        cfg = bench._gateway_config(workdir, "nomad-logs")
        cfg["providers"]["nomad"] = {
            "enabled": True,
            "address": nomad,
            "log_max_followers": 10 if quick else 200,
        }
        gw = bench.Server("gateway", workdir, cpus.get("server"), cfg, "nomad-logs")
        time.sleep(1.0)
        rss0 = bench._status_kb(gw.pid, "VmRSS")
        started = time.monotonic()
        ids = asyncio.run(_submit_all(gw.base, bench.TOKEN, n))
        submitted = time.monotonic() - started
        db = workdir / "nomad-logs.db"
        deadline = time.monotonic() + (60 if quick else 600)
        have = 0
        while time.monotonic() < deadline:
            have = _with_output(db)
            if have >= n:
                break
            time.sleep(0.5)
        all_output_s = time.monotonic() - started - submitted if have >= n else None
        _, ready = bench._http("GET", gw.base + "/readyz")
        nomad_health = ready["providers"]["nomad"]
        time.sleep(1.0)
        ticks0, t0 = bench._cpu_ticks(gw.pid), time.monotonic()
        time.sleep(idle_s)
        ticks1, t1 = bench._cpu_ticks(gw.pid), time.monotonic()
        idle = (ticks1 - ticks0) / bench.CLK_TCK / (t1 - t0)
        rss = bench._status_kb(gw.pid, "VmRSS")
        _, ready = bench._http("GET", gw.base + "/readyz")
        slots = ready["providers"]["nomad"]["log_slots"]
        return {
            "tasks": n,
            "submitted": len(ids),
            "submit_s": round(submitted, 1),
            "with_output": have,
            "all_output_after_s": round(all_output_s, 1) if all_output_s is not None else None,
            "tracked": nomad_health["tracked_tasks"],
            "slots": slots,
            "fds": bench._fd_count(gw.pid),
            "rss_kb_per_task": round((rss - rss0) / n, 1),
            "idle_cpu": round(idle, 4),
            "idle_s": idle_s,
        }
    finally:
        if gw is not None:
            gw.stop()
        sim.terminate()
        sim.wait(10)


def render(part: dict[str, Any]) -> list[str]:
    if "error" in part:
        return [f"Nomad logs of many allocations: error {part['error']}"]
    slots = part["slots"]
    ok_out = part["with_output"] >= part["tasks"]
    return [
        f"Nomad logs: {part['tasks']} running tasks (submitted in {part['submit_s']} s),"
        f" {part['tracked']} tracked",
        f"  tasks with output stored: {part['with_output']}/{part['tasks']}"
        f" (all {part['all_output_after_s']} s after the last submit)",
        f"  live follows {slots['live']} of {slots['max']}, {slots['catching_up']} streams"
        f" caught up by {slots['catchup_reads']} reads; {part['fds']} fds",
        f"  goal: every running task's output stored: {'met' if ok_out else 'NOT met'}",
        f"  goal: RSS per tracked task {part['rss_kb_per_task']} KB (<= {GOAL_KB:.0f} KB):"
        f" {'met' if part['rss_kb_per_task'] <= GOAL_KB else 'NOT met'}",
        f"  goal: idle CPU {part['idle_cpu'] * 100:.1f}% of a core over {part['idle_s']} s"
        f" (<= {GOAL_IDLE * 100:.0f}%): {'met' if part['idle_cpu'] <= GOAL_IDLE else 'NOT met'}",
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["sim"]:
        _sim_main(sys.argv[2])
    else:
        print(json.dumps(run(Path(sys.argv[1]), {"server": None, "load": None}, quick=True)))
