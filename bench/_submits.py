"""Bench part ``submits``: sustained ``POST /v1/tasks``/s, and its p99, at 1 and 64 connections.

Two cases, each against its own gateway (pinned like every server of the bench):

* **queued**: a local task behind a held slot (``max_concurrent: 1``, the slot taken by a
  ``sleep`` submitted first), so nothing is spawned: the cost of recording and
  acknowledging a submit;
* **nomad**: a Nomad job through the Nomad simulator (its own process, on the load CPU):
  the register call upstream and the recording of its answer.

Two ceilings, each a bare aiohttp process at the same connection count: ``ceiling``, aiohttp
alone reading the same body and answering (``_ceilings.py body``); ``record``, the same plus
the least a durable submit must store before its answer, group-committed into egw's schema
(``_ceilings.py record``: the task row, its ``submitted`` event, its Idempotency-Key). Every
answer counts: the goal needs 0 errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _drive import Proc, call, ceiling, drive, gateway, goal, head, ratio, rounds, row, simulator

TOKEN = "bench-token-0123456789abcdef"
#: the issue's goal for the queued case at 64 connections
GOAL_QUEUED_64 = 5000.0
CONNS = (1, 64)


def config(workdir: Path, name: str, nomad: str | None = None) -> dict[str, Any]:
    providers: dict[str, Any] = {"local": {"enabled": True, "max_concurrent": 1}}
    if nomad:
        providers["nomad"] = {"enabled": True, "address": nomad}
    return {
        "server": {"host": "127.0.0.1"},
        "auth": {
            "tokens": [{"name": "bench", "token": TOKEN, "scopes": ["tasks:read", "tasks:write"]}]
        },
        "storage": {"path": str(workdir / f"{name}.db")},
        "providers": providers,
        "logging": {"level": "info", "format": "json"},
    }


def templates(body: dict[str, Any]) -> list[dict[str, str]]:
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "Idempotency-Key": "bench-{n}",
    }
    return [
        {"kind": "submit", "head": head("POST", "/v1/tasks", headers), "body": json.dumps(body)}
    ]


QUEUED = {"provider": "local", "task": {"command": "true", "args": []}}
NOMAD = {
    "provider": "nomad",
    "task": {
        "image": "busybox:latest",
        "command": "echo",
        "args": ["hello"],
        "job_id": "bench-{n}",
    },
}


def run(workdir: Path, cpus: dict[str, int | None], *, quick: bool) -> dict[str, Any]:
    seconds, n = (0.3, 1) if quick else (3.0, 3)
    out: dict[str, Any] = {"seconds": seconds, "rounds": n}
    tpl = templates(QUEUED)
    procs: list[Proc] = []

    def load(proc: Proc, conns: int, body: list[dict[str, str]], secs: float = seconds) -> Any:
        cpu = cpus["load"]
        return lambda: drive(
            workdir, proc.port, body, conns=conns, seconds=secs, cpu=cpu, server_pid=proc.pid
        )

    try:
        ceil = ceiling("submits-ceiling", "body", workdir, cpus["server"])
        procs.append(ceil)
        record_db = workdir / "submits-record.db"
        rec = ceiling("submits-record", "record", workdir, cpus["server"], db=record_db)
        procs.append(rec)
        gw = gateway("submits-queued", config(workdir, "submits-queued"), workdir, cpus["server"])
        procs.append(gw)
        base = f"http://127.0.0.1:{gw.port}"
        held = {"provider": "local", "task": {"command": "sleep", "args": ["3600"]}}
        status, body = call(base, "POST", "/v1/tasks", held, TOKEN)
        if status != 202:
            raise RuntimeError(f"submit answered {status}: {body}")
        if not quick:  # warm-up: first requests of a process are slower
            load(ceil, 64, tpl, 1.0)()
            load(rec, 64, tpl, 1.0)()
            load(gw, 64, tpl, 1.0)()
        runs = {
            f"{k} {c}": load(p, c, tpl)
            for k, p in (("ceiling", ceil), ("record", rec), ("queued", gw))
            for c in CONNS
        }
        got = rounds(runs, n)
        for case in ("ceiling", "record", "queued"):
            out[case] = {str(c): got[f"{case} {c}"] for c in CONNS}
        status, last = call(base, "GET", "/v1/tasks?limit=1", None, TOKEN)
        out["queued_last_status"] = last["tasks"][0]["status"] if status == 200 else status
    finally:
        for proc in reversed(procs):
            proc.stop()
    if not quick:  # the simulator's process takes seconds to start: not in the smoke run
        out["nomad"] = _nomad(workdir, cpus, seconds, load)
    q64 = out["queued"]["64"]
    out["goal_met"] = q64["non2xx"] == 0 and q64["ok_rps"] >= GOAL_QUEUED_64
    return out


def _nomad(workdir: Path, cpus: dict[str, int | None], seconds: float, load: Any) -> dict[str, Any]:
    sim = simulator("nomad", workdir, cpus["load"])
    try:
        name = "submits-nomad"
        gw = gateway(name, config(workdir, name, nomad=sim.address), workdir, cpus["server"])
        try:
            return {str(c): load(gw, c, templates(NOMAD))() for c in CONNS}
        finally:
            gw.stop()
    finally:
        sim.stop()


def render(part: dict[str, Any]) -> list[str]:
    if "error" in part:
        return ["Submits", f"  ERROR: {part['error']}"]
    lines = ["Submits: POST /v1/tasks, sustained (answers/s, p50/p99 ms, errors, server CPU)"]
    for case in ("ceiling", "record", "queued", "nomad"):
        for c in CONNS if case in part else ():
            lines.append(row(f"{case} {c} conn", part[case][str(c)]))
    q = part["queued"]["64"]
    ceil = part["ceiling"]["64"]["ok_rps"]
    lines.append(f"  queued / ceiling at 64 connections: {ratio(q['ok_rps'], ceil)}")
    if "record" in part:  # absent from reports made before the record ceiling
        rec = part["record"]["64"]["ok_rps"]
        lines.append(f"  queued / record at 64 connections: {ratio(q['ok_rps'], rec)}")
    cpus = {
        k: part[k]["64"]["per_cpu_s"] or 0 for k in ("queued", "record", "ceiling") if k in part
    }
    lines.append(
        "  per server CPU-second at 64 connections: "
        + ", ".join(f"{k} {v:,} ({1e6 / v if v else 0:.0f} us a request)" for k, v in cpus.items())
    )
    lines.append(
        goal(
            "submits, queued local task, 64 connections",
            f"{q['ok_rps']:,.0f}/s",
            f">= {GOAL_QUEUED_64:,.0f}/s",
            part["goal_met"],
        )
    )
    return lines
