"""Bench part ``webhooks``: signed ``workflow_run`` deliveries/s into ``POST /v1/webhooks/github``.

The delivery is GitHub's own example (``tests/samples/github/webhooks/examples/
workflow_run/requested.payload.json``, 19.5 KB as GitHub sends it), its
``workflow_run.id`` set per run and signed with the gateway's secret
(``X-Hub-Signature-256``); every request carries a fresh ``X-GitHub-Delivery``.

* **foreign**: runs egw did not start (an organisation's other workflows): egw answers
  202 ``ignored``;
* **own**: runs egw started (tasks submitted through egw to the GitHub simulator, their
  runs left queued): each delivery is appended to the event log (200), then applied;
* **mixed**: nine foreign deliveries to one of egw's, as a busy organisation sends them.

Ceilings, same connections, same requests: ``verify`` (aiohttp verifying the HMAC and
parsing with orjson, then answering) and ``body`` (aiohttp reading the body and
answering). Afterwards the event log is counted: every delivery egw acknowledged with
200 must be stored exactly once (``lost`` and ``doubled`` must be 0), and no foreign one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from _drive import Proc, call, ceiling, drive, gateway, goal, head, ratio, rounds, row, simulator

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "tests/samples/github/webhooks/examples/workflow_run/requested.payload.json"
TOKEN = "bench-token-0123456789abcdef"
SECRET = "bench-webhook-secret"
GITHUB_TOKEN = "ghp_bench_0123456789"  # bench/_sims.py's
OWNER, REPO = "octo-org", "deploys"
GOAL_FOREIGN, GOAL_OWN, GOAL_P99_MS = 0.7, 0.4, 50.0
CONNS = 64
FOREIGN_BASE = 8_000_000_000


def delivery(run_id: int, kind: str) -> dict[str, str]:
    payload = json.loads(SAMPLE.read_text())
    payload["workflow_run"]["id"] = run_id
    body = json.dumps(payload)  # GitHub's spacing: about 19.5 KB
    sig = "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    headers = {
        "User-Agent": "GitHub-Hookshot/0e1f2a3",
        "Content-Type": "application/json",
        "X-GitHub-Event": "workflow_run",
        "X-GitHub-Delivery": "{n}",
        "X-GitHub-Hook-ID": "109948940",
        "X-Hub-Signature-256": sig,
    }
    return {"kind": kind, "head": head("POST", "/v1/webhooks/github", headers), "body": body}


def config(workdir: Path, sim: str) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1"},
        "auth": {
            "tokens": [{"name": "bench", "token": TOKEN, "scopes": ["tasks:read", "tasks:write"]}]
        },
        "storage": {"path": str(workdir / "webhooks.db")},
        "providers": {
            "github_actions": {
                "enabled": True,
                "api_url": sim,
                "token": GITHUB_TOKEN,
                "webhook_secret": SECRET,
                "owner": OWNER,
                "repo": REPO,
                "poll_min_s": 60,
                "poll_max_s": 600,
            }
        },
        "logging": {"level": "info", "format": "json"},
    }


def _own_runs(gw: Proc, n: int) -> list[int]:
    base = f"http://127.0.0.1:{gw.port}"
    runs = []
    for _ in range(n):
        task = {"workflow_id": "deploy.yml", "ref": "main", "inputs": {"env": "prod"}}
        status, body = call(
            base, "POST", "/v1/tasks", {"provider": "github_actions", "task": task}, TOKEN
        )
        if status != 202 or not (body.get("upstream") or {}).get("id"):
            raise RuntimeError(f"submit answered {status}: {body}")
        runs.append(int(body["upstream"]["id"]))
    return runs


def _stored(db: Path) -> tuple[int, int]:
    """(rows, distinct delivery ids) of stored deliveries."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT delivery_id) FROM events"
            " WHERE kind = 'github.delivery'"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0]), int(row[1])


def run(workdir: Path, cpus: dict[str, int | None], *, quick: bool) -> dict[str, Any]:
    seconds, n = (0.3, 1) if quick else (3.0, 3)
    foreign = [delivery(FOREIGN_BASE + i, "foreign") for i in range(10)]
    out: dict[str, Any] = {
        "seconds": seconds,
        "rounds": n,
        "connections": CONNS,
        "body_bytes": len(foreign[0]["body"]),
    }
    procs: list[Proc] = []
    try:
        body = _start(procs, ceiling("hooks-body", "body", workdir, cpus["server"], SECRET))
        verify = _start(procs, ceiling("hooks-verify", "verify", workdir, cpus["server"], SECRET))
        sim = _start(procs, simulator("github", workdir, cpus["load"]))
        gw = _start(
            procs, gateway("webhooks", config(workdir, sim.address), workdir, cpus["server"])
        )
        own = [delivery(r, "own") for r in _own_runs(gw, 3 if quick else 10)]
        mixed = [*foreign[:9], own[0]]

        def load(proc: Proc, tpl: list[dict[str, str]], secs: float = seconds) -> Any:
            cpu = cpus["load"]
            return lambda: drive(
                workdir, proc.port, tpl, conns=CONNS, seconds=secs, cpu=cpu, server_pid=proc.pid
            )

        if not quick:  # warm-up: first requests of a process are slower
            for proc, tpl in ((body, foreign), (verify, foreign), (gw, foreign), (gw, own)):
                load(proc, tpl, 1.0)()
        runs = {
            "body": load(body, foreign),
            "verify": load(verify, foreign),
            "foreign": load(gw, foreign),
            "own": load(gw, own),
            "mixed": load(gw, mixed),
        }
        out.update(rounds(runs, n))
        time.sleep(0.5)
    finally:
        for proc in reversed(procs):
            proc.stop()
    rows, distinct = _stored(workdir / "webhooks.db")
    # every own delivery answered 200 in every round (warm-up included) must be stored once
    acked = _acked_own(workdir)
    acked_foreign = sum(
        out[k]["answers_all_rounds"].get("foreign 202", 0) for k in ("foreign", "mixed")
    )
    out["stored"] = {
        "acked_own": acked,
        "rows": rows,
        "distinct": distinct,
        "lost": max(0, acked - distinct),
        "doubled": rows - distinct,
        "extra": max(0, distinct - acked),
        "foreign_acked_202": acked_foreign,
    }
    v = out["verify"]["ok_rps"]
    out["ratio_foreign"] = ratio(out["foreign"]["ok_rps"], v)
    out["ratio_own"] = ratio(out["own"]["ok_rps"], v)
    out["ratio_mixed"] = ratio(out["mixed"]["ok_rps"], v)
    out["ratio_foreign_body"] = ratio(out["foreign"]["ok_rps"], out["body"]["ok_rps"])
    return out


def _start(procs: list[Proc], proc: Proc) -> Proc:
    procs.append(proc)
    return proc


def _acked_own(workdir: Path) -> int:
    """Own deliveries the gateway answered 200, from its request log (every load run)."""
    acked = 0
    for line in (workdir / "webhooks.log").read_text().splitlines():
        if '"path":"/v1/webhooks/github"' in line and '"status":200' in line:
            acked += 1
    return acked


def render(part: dict[str, Any]) -> list[str]:
    if "error" in part:
        return ["Webhooks", f"  ERROR: {part['error']}"]
    lines = [
        f"Webhooks: signed workflow_run deliveries ({part['body_bytes']:,} bytes),"
        f" {part['connections']} connections (answers/s, p50/p99 ms, non-2xx, server CPU)"
    ]
    for kind in ("body", "verify", "foreign", "own", "mixed"):
        lines.append(row(kind, part[kind]))
    s = part["stored"]
    lines.append(
        f"  event log: {s['acked_own']} own deliveries acknowledged, {s['distinct']} stored"
        f" (lost {s['lost']}, doubled {s['doubled']}, unacknowledged but stored {s['extra']})"
    )
    lines.append(f"  foreign / hello-world reading the body: {part['ratio_foreign_body']}")
    lines.append(f"  mixed / verify: {part['ratio_mixed']}")
    per_cpu = ratio(part["foreign"]["per_cpu_s"] or 0, part["verify"]["per_cpu_s"] or 0)
    own_cpu = ratio(part["own"]["per_cpu_s"] or 0, part["verify"]["per_cpu_s"] or 0)
    lines.append(f"  per server CPU-second: foreign / verify {per_cpu}, own / verify {own_cpu}")
    lines.append(
        f"  p99 of the ceilings in the same run: verify {part['verify']['p99_ms']} ms,"
        f" body {part['body']['p99_ms']} ms (the machine's latency floor at that moment)"
    )
    by_kind = part["mixed"].get("p99_ms_by_kind") or {}
    if by_kind:
        lines.append(
            "  p99 in the mixed run by kind: "
            + ", ".join(f"{k} {v} ms" for k, v in sorted(by_kind.items()))
        )
    worst_p99 = max(part[k]["p99_ms"] or 0 for k in ("foreign", "own", "mixed"))
    foreign_met = part["ratio_foreign"] >= GOAL_FOREIGN and part["foreign"]["non2xx"] == 0
    own_met = part["ratio_own"] >= GOAL_OWN and part["own"]["non2xx"] == 0
    bad = s["lost"] + s["doubled"]
    conns = part["connections"]
    lines += [
        goal(
            "webhooks foreign / verify+parse",
            f"{part['ratio_foreign']}",
            f">= {GOAL_FOREIGN}",
            foreign_met,
        ),
        goal(
            "webhooks own (appended) / verify+parse",
            f"{part['ratio_own']}",
            f">= {GOAL_OWN}",
            own_met,
        ),
        goal("webhooks lost + doubled in the event log", f"{bad}", "0", bad == 0),
        goal(
            f"webhooks p99 ack, {conns} connections",
            f"{worst_p99} ms",
            f"< {GOAL_P99_MS:.0f} ms",
            worst_p99 < GOAL_P99_MS,
        ),
    ]
    return lines
