"""Tasks in flight: thousands of running tasks across Nomad, GitHub, Cloud Run and the local runner.

The simulators (bench/_inflight_sims.py, their own process) run every job for an hour, saying a
few lines at its start. The gateway (bench/_servers.py, pinned like the other parts) gets the
tasks; the bench tails a sample of each provider's tasks over SSE from the moment they are
submitted, then, once everything runs and nothing changes upstream, measures the gateway at rest:

* RSS per tracked task: (RSS with the tasks - RSS of the same gateway before any), with an
  optional tracemalloc breakdown by source line (``EGW_BENCH_INFLIGHT_TRACE=1``);
* idle CPU (% of one core) over a window, next to the same gateway's idle CPU with no task;
* output live: how many of each provider's running tasks have output, and each tailed task's
  delay from submit to its first line on the SSE stream;
* upstream calls per task per minute during the window, next to each budget (Cloud Logging's
  ``logging_reads_per_minute``, GitHub's 5,000 requests an hour, a 304 being free).

Size: ``EGW_BENCH_INFLIGHT_TASKS`` (10,000 by default, split evenly over Nomad, GitHub and Cloud
Run, plus 500 local ones); ``--quick``: 30 + 5. Standalone: ``python bench/_inflight.py --tasks N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _inflight_sims import (  # noqa: E402 - the sibling module, found through HERE
    CLOUDRUN_TOKEN,
    GITHUB_TOKEN,
    JOB,
    OWNER,
    PROJECT,
    REGION,
    REPO,
    WEBHOOK_SECRET,
)

TOKEN = "bench-inflight-token-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL_KB_PER_TASK = 20.0
GOAL_IDLE_CPU_PCT = 5.0
GITHUB_PER_MINUTE = 5000 / 60.0
LOGGING_READS_PER_MINUTE = 30
PROVIDERS = ("nomad", "github_actions", "cloud_run", "local")


def _sizes(quick: bool) -> dict[str, int]:
    """Tasks by provider: the total split evenly over the remote providers asked for
    (``EGW_BENCH_INFLIGHT_PROVIDERS``, comma-separated; default all three), plus local ones."""
    total = 30 if quick else int(os.environ.get("EGW_BENCH_INFLIGHT_TASKS", "10000"))
    remote = ("nomad", "github_actions", "cloud_run")
    asked = os.environ.get("EGW_BENCH_INFLIGHT_PROVIDERS") or ",".join(remote)
    chosen = [p for p in remote if p in asked.split(",")]
    sizes = {p: (total // len(chosen) if p in chosen else 0) for p in remote}
    sizes[chosen[0]] += total - sum(sizes.values())
    sizes["local"] = 5 if quick else min(500, max(5, total // 20))
    return sizes


def _config(workdir: Path, urls: dict[str, str], local: int, quick: bool) -> dict[str, Any]:
    # --quick: Cloud Run's first lines without the default 5 s of settle time
    fast = {"logging_settle_s": 1.0, "poll_min_s": 0.5} if quick else {}
    return {
        "server": {"host": "127.0.0.1", "sse_flush_ms": 25},
        "auth": {
            "tokens": [{"name": "bench", "token": TOKEN, "scopes": ["tasks:read", "tasks:write"]}]
        },
        "storage": {"path": str(workdir / "inflight.db")},
        "logging": {"level": "warning", "format": "json"},
        "providers": {
            "local": {"enabled": True, "max_concurrent": local},
            "nomad": {"enabled": True, "address": urls["nomad"]},
            "github_actions": {
                "enabled": True,
                "api_url": urls["github"],
                "token": GITHUB_TOKEN,
                "webhook_secret": WEBHOOK_SECRET,
                "owner": OWNER,
                "repo": REPO,
            },
            "cloud_run": {
                "enabled": True,
                "run_api_url": urls["cloud_run"],
                "logging_api_url": urls["cloud_run"],
                "access_token": CLOUDRUN_TOKEN,
                "project": PROJECT,
                "region": REGION,
                "logging_reads_per_minute": LOGGING_READS_PER_MINUTE,
                **fast,
            },
        },
    }


def _task(provider: str, i: int) -> dict[str, Any]:
    if provider == "nomad":
        task = {"job_id": f"inflight-{i}", "image": "busybox:1.36", "command": "work"}
    elif provider == "github_actions":
        task = {"workflow_id": "work.yml", "ref": "main", "inputs": {"n": str(i)}}
    elif provider == "cloud_run":
        task = {"project": PROJECT, "region": REGION, "job": JOB, "args": [str(i)]}
    else:
        task = {"command": "sh", "args": ["-c", "echo ready; exec sleep 3600"]}
    # a deadline each, so the gateway holds a watchdog timer per task as it would in production
    return {"provider": provider, "task": task, "timeout_s": 2 * 3600}


# --- processes -------------------------------------------------------------------------------


def _start(cmd: list[str], ready: Path, log: Path, env: dict[str, str] | None = None) -> Any:
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(HERE.parent), env=env
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{cmd[1]} did not start:\n{log.read_bytes()[-2000:].decode()}")
        time.sleep(0.05)
    return proc, out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _idle_cpu(pid: int, seconds: float) -> float:
    """% of one core the process used over ``seconds``."""
    before, t0 = _ticks(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (_ticks(pid) - before) / CLK_TCK / (time.monotonic() - t0)


# --- the clients -----------------------------------------------------------------------------


class Tailer:
    """One SSE tail of a task's log from its submit: when its first output line came."""

    def __init__(self, provider: str, task_id: str, submitted: float) -> None:
        self.provider = provider
        self.task_id = task_id
        self.submitted = submitted
        self.first: float | None = None
        self.error: str | None = None

    async def run(self, http: aiohttp.ClientSession, base: str) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
        try:
            async with http.get(
                f"{base}/v1/tasks/{self.task_id}/logs",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            ) as resp:
                if resp.status != 200:
                    self.error = f"HTTP {resp.status}"
                    return
                event = b""
                async for line in resp.content:
                    if line.startswith(b"event:"):
                        event = line[6:].strip()
                    elif line.startswith(b"data:") and event.startswith(b"log"):
                        self.first = self.first or time.monotonic()
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.error = repr(exc)


async def _submit_all(base: str, sizes: dict[str, int], tail_per_provider: int) -> Any:
    """Submit every task (32 at a time), tailing the first ones of each provider at once."""
    conn = aiohttp.TCPConnector(limit=0)
    http = aiohttp.ClientSession(connector=conn)
    timeout = aiohttp.ClientTimeout(total=60)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ids: dict[str, list[str]] = {p: [] for p in PROVIDERS}
    tailers: list[Tailer] = []
    tails: list[asyncio.Task[None]] = []
    todo = [(p, i) for p in PROVIDERS for i in range(sizes[p])]
    # interleave the providers, so each one's tasks arrive over the whole submit
    todo.sort(key=lambda pi: pi[1] / max(1, sizes[pi[0]]))
    sem = asyncio.Semaphore(32)
    errors: dict[str, list[str]] = {p: [] for p in PROVIDERS}

    async def one(provider: str, i: int) -> None:
        url = f"{base}/v1/tasks"
        try:
            async with (
                sem,
                http.post(url, json=_task(provider, i), headers=auth, timeout=timeout) as r,
            ):
                body = await r.json()
                if r.status != 202:
                    errors[provider].append(f"HTTP {r.status} {body}")
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors[provider].append(repr(exc))
            return
        ids[provider].append(body["id"])
        if len([t for t in tailers if t.provider == provider]) < tail_per_provider:
            tailer = Tailer(provider, body["id"], time.monotonic())
            tailers.append(tailer)
            tails.append(asyncio.create_task(tailer.run(http, base)))

    await asyncio.gather(*(one(p, i) for p, i in todo))
    return ids, errors, tailers, http, tails


async def _spoken(
    http: aiohttp.ClientSession, base: str, ids: dict[str, list[str]]
) -> dict[str, int]:
    """By provider: tasks with output in the store (a log read past the end answers its size)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    sem = asyncio.Semaphore(32)

    async def size(task_id: str) -> int:
        async with sem:
            url = f"{base}/v1/tasks/{task_id}/logs?offset=1000000000000"
            async with http.get(url, headers=auth) as r:
                await r.read()
                return int(r.headers.get("X-Egw-Offset", "0"))

    out = {}
    for provider, tasks in ids.items():
        sizes = await asyncio.gather(*(size(t) for t in tasks))
        out[provider] = sum(1 for n in sizes if n > 0)
    return out


async def _states(http: aiohttp.ClientSession, base: str) -> dict[str, dict[str, int]]:
    """By provider: tasks running."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    out: dict[str, dict[str, int]] = {}
    for provider in PROVIDERS:
        running = 0
        cursor: str | None = None
        while True:
            q = {"provider": provider, "status": "running", "limit": "500"}
            if cursor:
                q["cursor"] = cursor
            async with http.get(f"{base}/v1/tasks", params=q, headers=auth) as r:
                body = await r.json()
            running += len(body["tasks"])
            cursor = body.get("next_cursor")
            if not cursor:
                break
        out[provider] = {"running": running}
    return out


async def _counters(http: aiohttp.ClientSession, control: str) -> dict[str, Any]:
    async with http.get(f"{control}/counters") as r:
        return dict(await r.json())


def _calls(before: dict[str, Any], after: dict[str, Any], name: str) -> int:
    b, a = before[name]["requests"], after[name]["requests"]
    return sum(a.values()) - sum(b.values())


async def _measure(
    workdir: Path, cpus: dict[str, int | None], sizes: dict[str, int], quick: bool
) -> dict[str, Any]:
    total = sum(sizes.values())
    ready = workdir / "inflight-sims.ready"
    sims_cmd = [sys.executable, str(HERE / "_inflight_sims.py"), "--ready", str(ready)]
    sims_cmd += ["--tasks", str(sizes["github_actions"] + 10)]
    sims, sims_log = _start(sims_cmd, ready, workdir / "inflight-sims.log")
    procs = [(sims, sims_log)]
    try:
        if cpus.get("load") is not None:
            os.sched_setaffinity(sims.pid, {cpus["load"]})
        urls = json.loads(ready.read_text())
        cfg_file = workdir / "inflight-gateway.json"
        cfg_file.write_text(json.dumps(_config(workdir, urls, sizes["local"], quick)))
        gw_ready = workdir / "inflight-gateway.ready"
        cmd = [sys.executable, str(HERE / "_servers.py"), "gateway", "--ready", str(gw_ready)]
        cmd += ["--config", str(cfg_file)]
        if cpus.get("server") is not None:
            cmd += ["--cpu", str(cpus["server"])]
        env = dict(os.environ)
        trace = workdir / "inflight-trace.json"
        tracing = bool(os.environ.get("EGW_BENCH_INFLIGHT_TRACE"))
        if tracing:
            env["EGW_BENCH_TRACEMALLOC"] = str(trace)
        gw, gw_log = _start(cmd, gw_ready, workdir / "inflight-gateway.log", env)
        procs.append((gw, gw_log))
        port, pid_text = gw_ready.read_text().split()
        base, pid = f"http://127.0.0.1:{port}", int(pid_text)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{urls['control']}/webhook", json={"url": f"{base}/v1/webhooks/github"}
            ) as r,
        ):
            r.raise_for_status()
        window = 1.0 if quick else 30.0
        await asyncio.sleep(0.5 if quick else 2.0)
        empty_rss = _rss_kb(pid)
        empty_cpu = await asyncio.to_thread(_idle_cpu, pid, min(window, 10.0))
        if tracing:
            os.kill(pid, signal.SIGUSR1)  # the baseline snapshot
        t0 = time.monotonic()
        ids, errors, tailers, http, tails = await _submit_all(base, sizes, 3 if quick else 100)
        submitted_s = time.monotonic() - t0
        tracked = sum(len(v) for v in ids.values())
        try:
            # every task running, every running task with output (or the time is up)
            deadline = time.monotonic() + (30 if quick else 120 + total / 100)
            while time.monotonic() < deadline:
                states = await _states(http, base)
                running = sum(s["running"] for s in states.values())
                if running == tracked and sum((await _spoken(http, base, ids)).values()) == tracked:
                    break
                await asyncio.sleep(0.5 if quick else 10.0)
            settled_s = time.monotonic() - t0
            await asyncio.sleep(0.5 if quick else 10.0)  # the last first-lines, then quiet
            before = await _counters(http, urls["control"])
            rss = _rss_kb(pid)
            cpu = await asyncio.to_thread(_idle_cpu, pid, window)
            after = await _counters(http, urls["control"])
            fds = _fds(pid)
            async with http.get(f"{base}/readyz") as r:
                nomad_health = (await r.json())["providers"].get("nomad") or {}
            states = await _states(http, base)
            spoken = await _spoken(http, base, ids)
            breakdown = None
            if tracing:
                os.kill(pid, signal.SIGUSR1)
                for _ in range(600):
                    if trace.exists():
                        breakdown = json.loads(trace.read_text())
                        break
                    await asyncio.sleep(0.5)
        finally:
            for t in tails:
                t.cancel()
            await asyncio.gather(*tails, return_exceptions=True)
            await http.close()
        sims_cpu = await asyncio.to_thread(_idle_cpu, sims.pid, 1.0)
    finally:
        for proc, out in reversed(procs):
            _stop(proc)
            out.close()
    minutes = window / 60.0
    per_provider: dict[str, Any] = {}
    for provider in PROVIDERS:
        mine = [t for t in tailers if t.provider == provider]
        delays = sorted(t.first - t.submitted for t in mine if t.first is not None)
        n = max(1, len(ids[provider]))
        row: dict[str, Any] = {
            "tasks": len(ids[provider]),
            "submit_errors": len(errors[provider]),
            "submit_error": errors[provider][0] if errors[provider] else None,
            **states[provider],
            "with_output": spoken[provider],
            "tailed": len(mine),
            "tailed_with_output": len(delays),
            "first_line_p50_s": round(delays[len(delays) // 2], 2) if delays else None,
            "first_line_max_s": round(delays[-1], 2) if delays else None,
        }
        sim = {"nomad": "nomad", "github_actions": "github", "cloud_run": "cloud_run"}.get(provider)
        if sim is not None:
            calls = _calls(before, after, sim)
            row["calls_per_min"] = round(calls / minutes, 1)
            row["calls_per_task_per_min"] = round(calls / minutes / n, 4)
        per_provider[provider] = row
    gh_spent = after["github"]["rate_used"] - before["github"]["rate_used"]
    per_provider["github_actions"]["rate_spent_per_min"] = round(gh_spent / minutes, 1)
    per_provider["github_actions"]["rate_budget_per_min"] = round(GITHUB_PER_MINUTE, 1)
    per_provider["cloud_run"]["logging_reads_last_minute"] = after["cloud_run"][
        "logging_reads_last_minute"
    ]
    per_provider["cloud_run"]["logging_reads_budget_per_min"] = LOGGING_READS_PER_MINUTE
    return {
        "sizes": sizes,
        "tracked": tracked,
        "submit_s": round(submitted_s, 1),
        "settled_s": round(settled_s, 1),
        "window_s": window,
        "empty_rss_kb": empty_rss,
        "rss_kb": rss,
        "kb_per_task": round((rss - empty_rss) / max(1, tracked), 2),
        "empty_idle_cpu_pct": round(empty_cpu, 2),
        "idle_cpu_pct": round(cpu, 2),
        "sims_cpu_pct": round(sims_cpu, 1),
        "gateway_fds": fds,
        "providers": per_provider,
        "nomad_log_slots": nomad_health.get("log_slots"),
        "tracemalloc": breakdown,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def run(workdir: Path, cpus: dict[str, int | None], *, quick: bool) -> dict[str, Any]:
    return asyncio.run(_measure(workdir, cpus, _sizes(quick), quick))


def _line(label: str, value: str, goal: str, met: bool | None) -> str:
    mark = "n/a" if met is None else ("MET" if met else "MISSED")
    return f"  {label:<44} {value:>14}   goal {goal:<12} {mark}"


def render(part: dict[str, Any]) -> list[str]:
    if "error" in part:
        return [f"Tasks in flight: ERROR {part['error']}"]
    sizes = ", ".join(f"{k} {v}" for k, v in part["sizes"].items())
    mb, empty_mb = part["rss_kb"] / 1024, part["empty_rss_kb"] / 1024
    out = [
        f"Tasks in flight: {part['tracked']} tasks ({sizes}),"
        f" submitted in {part['submit_s']} s, settled in {part['settled_s']} s;"
        f" load average {' '.join(part['loadavg'])}",
        f"  gateway RSS {mb:.0f} MB (empty: {empty_mb:.0f} MB),"
        f" {part['gateway_fds']} fds; idle CPU {part['idle_cpu_pct']}% of a core"
        f" (empty: {part['empty_idle_cpu_pct']}%) over {part['window_s']:g} s;"
        f" simulators {part['sims_cpu_pct']}%",
        f"  {'provider':<15}{'tasks':>7}{'running':>9}{'output':>8}{'tailed':>8}{'live':>6}"
        f"{'first p50':>10}{'max':>7}{'calls/task/min':>16}{'submit errors':>15}",
    ]
    rows = {k: v for k, v in part["providers"].items() if v["tasks"] or v["submit_errors"]}
    for name, row in rows.items():
        p50 = row["first_line_p50_s"]
        mx = row["first_line_max_s"]
        calls = row.get("calls_per_task_per_min")
        out.append(
            f"  {name:<15}{row['tasks']:>7}{row['running']:>9}{row['with_output']:>8}"
            f"{row['tailed']:>8}{row['tailed_with_output']:>6}"
            f"{'-' if p50 is None else f'{p50:.1f}s':>10}{'-' if mx is None else f'{mx:.1f}s':>7}"
            f"{'-' if calls is None else f'{calls:.3f}':>16}{row['submit_errors']:>15}"
        )
        if row["submit_error"]:
            out.append(f"    first submit error: {row['submit_error'][:200]}")
    slots = part.get("nomad_log_slots")
    if slots and part["sizes"].get("nomad"):
        out.append(
            f"  nomad log streams at rest: {slots['live']} of {slots['max']} followed live"
            f" ({slots['tailed_live']} of tailed tasks, {slots['preemptions']} taken from"
            f" untailed ones), {slots['catching_up']} caught up; {slots['catchup_reads']}"
            " catch-up reads in all"
        )
    if part.get("tracemalloc"):
        tm = part["tracemalloc"]
        out.append(f"  tracemalloc: +{tm['total_bytes'] / part['tracked'] / 1024:.1f} KB per task")
        for row in tm["top"][:12]:
            out.append(f"    {row['bytes'] / part['tracked']:>8.0f} B/task  {row['where']}")
    out.append("Goals (tasks in flight):")
    out.append(
        _line(
            "gateway RSS per tracked task (KB)",
            f"{part['kb_per_task']:.1f}",
            f"<= {GOAL_KB_PER_TASK:g}",
            part["kb_per_task"] <= GOAL_KB_PER_TASK,
        )
    )
    out.append(
        _line(
            "idle CPU, nothing changing (% of a core)",
            f"{part['idle_cpu_pct']:.1f}",
            f"<= {GOAL_IDLE_CPU_PCT:g}",
            part["idle_cpu_pct"] <= GOAL_IDLE_CPU_PCT,
        )
    )
    for name, row in rows.items():
        out.append(
            _line(
                f"{name}: running tasks with output",
                f"{row['with_output']}/{row['tasks'] + row['submit_errors']}",
                "all",
                row["submit_errors"] == 0 and row["with_output"] == row["tasks"] == row["running"],
            )
        )
        out.append(
            _line(
                f"{name}: tailed tasks whose output came live",
                f"{row['tailed_with_output']}/{row['tailed']}",
                "all",
                row["tailed_with_output"] == row["tailed"],
            )
        )
    cr, gh = rows.get("cloud_run"), rows.get("github_actions")
    if cr is not None:
        out.append(
            _line(
                "cloud_run: Logging reads in the last minute",
                str(cr["logging_reads_last_minute"]),
                f"<= {cr['logging_reads_budget_per_min']}",
                cr["logging_reads_last_minute"] <= cr["logging_reads_budget_per_min"],
            )
        )
    if gh is not None:
        out.append(
            _line(
                "github_actions: rate limit spent per minute",
                f"{gh['rate_spent_per_min']:.1f}",
                f"<= {gh['rate_budget_per_min']}",
                gh["rate_spent_per_min"] <= gh["rate_budget_per_min"],
            )
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    os.environ["EGW_BENCH_INFLIGHT_TASKS"] = str(args.tasks)
    usable = sorted(os.sched_getaffinity(0))
    cpus: dict[str, int | None] = {"server": None, "load": None}
    if len(usable) >= 2:
        cpus = {"server": usable[0], "load": usable[1]}
    with tempfile.TemporaryDirectory(prefix="egw-inflight-") as tmp:
        part = run(Path(tmp), cpus, quick=args.quick)
    print("\n".join(render(part)))
    if args.json:
        Path(args.json).write_text(json.dumps(part, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
