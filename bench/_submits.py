"""Bench part ``submits``: sustained ``POST /v1/tasks``/s, and its p99, at 1 and 64 connections.

Two cases, each against its own gateway (pinned like every server of the bench):

* **queued**: a local task behind a held slot (``max_concurrent: 1``, the slot taken by a
  ``sleep`` submitted first), so nothing is spawned: the cost of recording and
  acknowledging a submit;
* **nomad**: a Nomad job through the Nomad simulator (its own process, on the load CPU):
  the register call upstream and the recording of its answer.

The ceiling is aiohttp alone reading the same body and answering (``_ceilings.py body``),
at the same connection count. Every answer counts: the goal needs 0 errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _drive import Proc, call, ceiling, drive, gateway, goal, head, ratio, row, simulator

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


def _measure(
    workdir: Path,
    proc: Proc,
    tpl: list[dict[str, str]],
    cpus: dict[str, int | None],
    seconds: float,
) -> dict[str, Any]:
    return {
        str(c): drive(
            workdir, proc.port, tpl, conns=c, seconds=seconds, cpu=cpus["load"], server_pid=proc.pid
        )
        for c in CONNS
    }


def run(workdir: Path, cpus: dict[str, int | None], *, quick: bool) -> dict[str, Any]:
    seconds = 0.5 if quick else 4.0
    out: dict[str, Any] = {"seconds": seconds}
    ceil = ceiling("submits-ceiling", "body", workdir, cpus["server"])
    try:
        out["ceiling"] = _measure(workdir, ceil, templates(QUEUED), cpus, seconds)
    finally:
        ceil.stop()
    gw = gateway("submits-queued", config(workdir, "submits-queued"), workdir, cpus["server"])
    try:
        base = f"http://127.0.0.1:{gw.port}"
        status, held = call(
            base,
            "POST",
            "/v1/tasks",
            {"provider": "local", "task": {"command": "sleep", "args": ["3600"]}},
            TOKEN,
        )
        if status != 202:
            raise RuntimeError(f"submit answered {status}: {held}")
        out["queued"] = _measure(workdir, gw, templates(QUEUED), cpus, seconds)
        status, last = call(base, "GET", "/v1/tasks?limit=1", None, TOKEN)
        out["queued_last_status"] = last["tasks"][0]["status"] if status == 200 else status
    finally:
        gw.stop()
    sim = simulator("nomad", workdir, cpus["load"])
    try:
        name = "submits-nomad"
        gw = gateway(name, config(workdir, name, nomad=sim.address), workdir, cpus["server"])
        try:
            out["nomad"] = _measure(workdir, gw, templates(NOMAD), cpus, seconds)
        finally:
            gw.stop()
    finally:
        sim.stop()
    q64 = out["queued"]["64"]
    out["goal_met"] = q64["non2xx"] == 0 and q64["ok_rps"] >= GOAL_QUEUED_64
    return out


def render(part: dict[str, Any]) -> list[str]:
    if "error" in part:
        return ["Submits", f"  ERROR: {part['error']}"]
    lines = ["Submits: POST /v1/tasks, sustained (answers/s, p50/p99 ms, errors, server CPU)"]
    for case in ("ceiling", "queued", "nomad"):
        for c in CONNS:
            lines.append(row(f"{case} {c} conn", part[case][str(c)]))
    q = part["queued"]["64"]
    ceil = part["ceiling"]["64"]["ok_rps"]
    lines.append(f"  queued / ceiling at 64 connections: {ratio(q['ok_rps'], ceil)}")
    lines.append(
        goal(
            "submits, queued local task, 64 connections",
            f"{q['ok_rps']:,.0f}/s",
            f">= {GOAL_QUEUED_64:,.0f}/s",
            part["goal_met"],
        )
    )
    return lines
