"""Bench part ``peer``: egw and Prefect side by side, creating runs and reading one.

Prefect 3.x runs from its own venv (``bench/peers/prefect.sh`` installs it in
``bench/peers/.venv``; without it this part is skipped with a message, and ``--quick``
skips the peer too, as its server takes seconds to start). Its server (``prefect server
start``, its own SQLite file, no UI) is pinned to the server CPU like egw, and driven by
the same load generator at 1 and 64 connections:

* **create**: Prefect ``POST /api/flow_runs/`` with ``{"flow_id": ...}`` (the flow made
  first with ``POST /api/flows/``; Prefect's API: ``FlowRunCreate``); egw ``POST /v1/tasks``
  of a local task that queues behind a held slot (as bench part ``submits``);
* **read**: Prefect ``GET /api/flow_runs/{id}``; egw ``GET /v1/tasks/{id}`` (with its
  bearer token).

Only successful answers (2xx) count; each side's best rate is compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from _drive import HERE, Proc, call, cpu_ticks, drive, gateway, goal, head, ratio, row
from _submits import QUEUED, TOKEN, config

PREFECT = HERE / "peers" / ".venv" / "bin" / "prefect"
GOAL_CREATE, GOAL_READ = 50.0, 30.0
CONNS = (1, 64)


class PrefectServer:
    def __init__(self, workdir: Path, cpu: int | None) -> None:
        home = workdir / "prefect"
        home.mkdir(exist_ok=True)
        self.port = _free_port()
        env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        self.log = home / "server.log"
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT, preexec_fn=pin
        )
        self.pid = self.proc.pid
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prefect did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/api/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _version() -> str:
    out = subprocess.run([str(PREFECT), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def _measure(
    workdir: Path,
    port: int,
    pid: int,
    create: dict[str, str],
    read: dict[str, str],
    cpus: dict[str, int | None],
    seconds: float,
) -> dict[str, Any]:
    out = {}
    for name, tpl in (("create", create), ("read", read)):
        for c in CONNS:
            out[f"{name} {c}"] = drive(
                workdir, port, [tpl], conns=c, seconds=seconds, cpu=cpus["load"], server_pid=pid
            )
    return out


def _prefect(workdir: Path, cpus: dict[str, int | None], seconds: float) -> dict[str, Any]:
    server = PrefectServer(workdir, cpus["server"])
    try:
        status, flow = call(server.base, "POST", "/api/flows/", {"name": "bench"})
        if status not in (200, 201):
            raise RuntimeError(f"prefect: creating the flow answered {status}: {flow}")
        status, run = call(server.base, "POST", "/api/flow_runs/", {"flow_id": flow["id"]})
        if status not in (200, 201):
            raise RuntimeError(f"prefect: creating a run answered {status}: {run}")
        body = json.dumps({"flow_id": flow["id"]})
        hdrs = {"Content-Type": "application/json"}
        create = {"kind": "create", "head": head("POST", "/api/flow_runs/", hdrs), "body": body}
        read_path = f"/api/flow_runs/{run['id']}"
        read = {"kind": "read", "head": head("GET", read_path, {}), "body": ""}
        ticks = cpu_ticks(server.pid)
        res = _measure(workdir, server.port, server.pid, create, read, cpus, seconds)
        res["cpu_s_total"] = round((cpu_ticks(server.pid) - ticks) / os.sysconf("SC_CLK_TCK"), 1)
        return res
    finally:
        server.stop()


def _egw(workdir: Path, cpus: dict[str, int | None], seconds: float) -> dict[str, Any]:
    gw: Proc = gateway("peer-egw", config(workdir, "peer-egw"), workdir, cpus["server"])
    try:
        base = f"http://127.0.0.1:{gw.port}"
        held = {"provider": "local", "task": {"command": "sleep", "args": ["3600"]}}
        status, task = call(base, "POST", "/v1/tasks", held, TOKEN)
        if status != 202:
            raise RuntimeError(f"egw: submit answered {status}: {task}")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        hdrs = {**auth, "Content-Type": "application/json", "Idempotency-Key": "peer-{n}"}
        body = json.dumps(QUEUED)
        create = {"kind": "create", "head": head("POST", "/v1/tasks", hdrs), "body": body}
        read = {"kind": "read", "head": head("GET", f"/v1/tasks/{task['id']}", auth), "body": ""}
        return _measure(workdir, gw.port, gw.pid, create, read, cpus, seconds)
    finally:
        gw.stop()


def _best(side: dict[str, Any], name: str) -> float:
    return max(side[f"{name} {c}"]["ok_rps"] for c in CONNS)


def run(workdir: Path, cpus: dict[str, int | None], *, quick: bool) -> dict[str, Any]:
    seconds = 0.3 if quick else 4.0
    out: dict[str, Any] = {"seconds": seconds}
    if not PREFECT.exists():
        out["skipped"] = "Prefect is not installed: run sh bench/peers/prefect.sh (a few minutes)"
    elif quick:
        out["skipped"] = "--quick: the peer's server is not started (it takes seconds)"
    else:
        out["version"] = _version()
        out["prefect"] = _prefect(workdir, cpus, seconds)
    out["egw"] = _egw(workdir, cpus, seconds)
    if "prefect" in out:
        p, e = out["prefect"], out["egw"]
        out["create_x"] = ratio(_best(e, "create"), _best(p, "create"))
        out["read_x"] = ratio(_best(e, "read"), _best(p, "read"))
        out["egw_errors"] = sum(e[k]["non2xx"] for k in e)
        out["prefect_errors"] = sum(p[k]["non2xx"] for k in p if k != "cpu_s_total")
    return out


def render(part: dict[str, Any]) -> list[str]:
    if "error" in part:
        return ["Peer", f"  ERROR: {part['error']}"]
    lines = ["Peer: egw and Prefect side by side (successful answers/s, p50/p99 ms)"]
    for side in ("prefect", "egw"):
        if side not in part:
            continue
        label = f"Prefect {part.get('version', '')}" if side == "prefect" else "egw"
        lines.append(f"  {label}")
        for name in ("create", "read"):
            for c in CONNS:
                lines.append(row(f"{name} {c} conn", part[side][f"{name} {c}"]))
    if "skipped" in part:
        lines.append(f"  peer skipped: {part['skipped']}")
        return lines
    # per second of each server's CPU: Prefect's threads win more of a shared core than
    # egw's one thread does, so on a busy machine answers/s alone flatters the peer
    per_cpu = {
        side: {
            n: max(part[side][f"{n} {c}"]["per_cpu_s"] or 0 for c in CONNS)
            for n in ("create", "read")
        }
        for side in ("egw", "prefect")
    }
    lines.append(
        "  per server CPU-second, best of 1 and 64 connections: create"
        f" {ratio(per_cpu['egw']['create'], per_cpu['prefect']['create'])}x,"
        f" read {ratio(per_cpu['egw']['read'], per_cpu['prefect']['read'])}x"
    )
    e_err, p_err = part["egw_errors"], part["prefect_errors"]
    create, read = part["create_x"], part["read_x"]
    lines += [
        goal(
            "peer: egw best create / Prefect best",
            f"{create}x",
            f">= {GOAL_CREATE:.0f}x",
            create >= GOAL_CREATE,
        ),
        goal(
            "peer: egw best read / Prefect best",
            f"{read}x",
            f">= {GOAL_READ:.0f}x",
            read >= GOAL_READ,
        ),
        goal(f"peer: egw errors (Prefect: {p_err})", f"{e_err}", "0", e_err == 0),
    ]
    return lines
