"""Bench part ``nomad-stream``: egw reading a busy cluster's event stream (issue: a busy Nomad).

A replayer posing as Nomad (this process, on the load CPU) holds the event stream of
``jobs`` jobs, 1% of them egw's, pre-encoded as Nomad writes it (NDJSON batches
``{"Index":N,"Events":[...]}`` after a ``{}`` heartbeat; the events have the shape of the
simulator's, egw/testing/nomad/cluster.py ``commit``), and writes it as fast as the reader
takes it. egw's tasks are submitted first through egw (the replayer answers the register
calls), then the stream is let go. Measured, in the same run:

* ceiling: a bare reader (aiohttp reading the stream, cutting lines, ``orjson.loads`` each)
  pinned on the server CPU: events/s from the first to the last byte;
* egw: events/s from letting the stream go to egw's ``last_index`` (``/readyz``) reaching the
  last index written; each of egw's tasks' ``running`` and ``succeeded`` on ``/v1/events``
  (an SSE client here), delayed from the moment the replayer began writing the piece that
  held it; ``egw_nomad_stream_lag_seconds`` seen during the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
GOAL_EVENTS_S = 50_000.0
GOAL_P99_MS = 100.0
PIECE = 256 * 1024
#: the phases of a job in the stream that move egw's task, and the status they move it to
STATES = {"running": "running", "complete": "succeeded"}


def _job(job_id: str, index: int) -> dict[str, Any]:
    group = {"Name": "g", "Count": 1, "Tasks": [{"Name": "main", "Driver": "docker"}]}
    return {
        "ID": job_id,
        "Name": job_id,
        "Namespace": "default",
        "Type": "batch",
        "Status": "pending",
        "Datacenters": ["dc1"],
        "TaskGroups": [group],
        "Meta": {"team": "other"},
        "Version": 0,
        "CreateIndex": index,
        "ModifyIndex": index,
        "JobModifyIndex": index,
    }


def _alloc(job_id: str, n: int, status: str, index: int, created: int) -> dict[str, Any]:
    state = {"pending": "pending", "running": "running", "complete": "dead"}[status]
    events = [{"Type": "Received", "Time": 1, "DisplayMessage": "Task received by client"}]
    if status != "pending":
        events.append({"Type": "Started", "Time": 2, "DisplayMessage": "Task started by client"})
    if status == "complete":
        events.append({"Type": "Terminated", "Time": 3, "ExitCode": 0, "DisplayMessage": "Exit 0"})
    return {
        "ID": f"{n:08x}-0000-4000-8000-000000000000",
        "EvalID": f"e{n:07x}-0000-4000-8000-000000000000",
        "Name": f"{job_id}.g[0]",
        "Namespace": "default",
        "NodeID": "5fc98185-17ff-26bc-a802-0c74fa471c99",
        "NodeName": "node-1",
        "JobID": job_id,
        "JobType": "batch",
        "TaskGroup": "g",
        "DesiredStatus": "run",
        "ClientStatus": status,
        "ClientDescription": {"pending": "No tasks have started"}.get(status, ""),
        "DeploymentID": "",
        "TaskStates": {
            "main": {
                "State": state,
                "Failed": False,
                "Restarts": 0,
                "StartedAt": None if status == "pending" else "2026-01-01T00:00:00Z",
                "FinishedAt": "2026-01-01T00:00:01Z" if status == "complete" else None,
                "Events": events,
            }
        },
        "CreateIndex": created,
        "ModifyIndex": index,
        "AllocModifyIndex": index,
        "Job": None,
    }


def _event(topic: str, kind: str, key: str, obj: dict[str, Any], index: int) -> dict[str, Any]:
    keys = [obj.get("JobID"), ""] if topic != "Job" else None
    payload = {topic: obj}
    return {
        "Topic": topic,
        "Type": kind,
        "Key": key,
        "Namespace": "default",
        "FilterKeys": keys,
        "Index": index,
        "Payload": payload,
    }


def build(jobs: int, ours: list[str]) -> tuple[list[tuple[int, bytes, str | None, str]], int]:
    """The stream's batches ``(index, line, egw job id or None, state it moves to)`` and the
    number of events. Each job: registered (job + evaluation), allocation placed, running,
    complete; the jobs' steps are interleaved so egw's changes are spread over the stream."""
    names = [f"other-{n:05d}" for n in range(jobs - len(ours))] + ours
    step = max(1, len(names) // max(1, len(ours)))
    order = sorted(range(len(names)), key=lambda i: (i % step, i))  # egw's spread out
    names = [names[i] for i in order]
    lines: list[tuple[int, bytes, str | None, str]] = []
    index, count = 100, 0
    created: dict[str, int] = {}
    for phase in ("registered", "pending", "running", "complete"):
        for n, job_id in enumerate(names):
            index += 1
            if phase == "registered":
                evs = [
                    _event("Job", "JobRegistered", job_id, _job(job_id, index), index),
                    _event(
                        "Evaluation",
                        "JobRegistered",
                        f"e{n:07x}",
                        {"ID": f"e{n:07x}", "JobID": job_id, "Status": "pending"},
                        index,
                    ),
                ]
            else:
                created.setdefault(job_id, index)
                alloc = _alloc(job_id, n, phase, index, created[job_id])
                evs = [_event("Allocation", "AllocationUpdated", alloc["ID"], alloc, index)]
                if phase == "pending":
                    done = {"ID": f"e{n:07x}", "JobID": job_id, "Status": "complete"}
                    evs.append(_event("Evaluation", "EvaluationUpdated", f"e{n:07x}", done, index))
            count += len(evs)
            mine = job_id if job_id in ours else None
            line = orjson.dumps({"Index": index, "Events": evs}) + b"\n"
            lines.append((index, line, mine, phase))
    return lines, count


class Replayer:
    """Nomad's API as far as egw needs it here: the stream, register, reads, empty logs."""

    def __init__(
        self, lines: list[tuple[int, bytes, str | None, str]], *, jobs: tuple[str, ...] = ()
    ) -> None:
        self.lines = lines
        #: jobs that exist from the start (a restart's), running
        self.jobs = set(jobs)
        self.go = asyncio.Event()
        self.written: dict[tuple[str, str], float] = {}
        self.registered: dict[str, int] = {}
        self.last_index = lines[-1][0] if lines else 0

    def app(self) -> Any:
        from aiohttp import web

        async def stream(request: web.Request) -> web.StreamResponse:
            start = int(request.query.get("index") or 0)
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            await resp.write(b"{}\n")
            bare = request.query.get("bare") is not None
            if not bare:
                await self.go.wait()
            piece: list[bytes] = []
            size, marks = 0, []
            for index, line, mine, phase in self.lines:
                if index < start:
                    continue
                piece.append(line)
                size += len(line)
                if mine is not None and phase in STATES and not bare:
                    marks.append((mine, STATES[phase]))
                if size >= PIECE:
                    try:
                        await self._write(resp, piece, marks)
                    except ConnectionError:
                        return resp  # the bare reader has all it wanted
                    piece, size, marks = [], 0, []
            await self._write(resp, piece, marks)
            with contextlib.suppress(ConnectionError):
                while True:  # Nomad never ends a stream: heartbeats
                    await asyncio.sleep(10)
                    await resp.write(b"{}\n")
            return resp

        async def register(request: web.Request) -> web.Response:
            body = await request.json()
            job_id = body["Job"]["ID"]
            self.registered[job_id] = 1
            return web.json_response({"EvalID": "", "JobModifyIndex": 1, "Index": 1})

        async def read_job(request: web.Request) -> web.Response:
            job_id = request.match_info["id"]
            if job_id not in self.registered and job_id not in self.jobs:
                return web.Response(status=404, text="job not found")
            return web.json_response({**_job(job_id, 1), "Status": "running", "Stop": False})

        async def empty(request: web.Request) -> web.Response:
            return web.json_response([], headers={"X-Nomad-Index": "1"})

        async def logs(request: web.Request) -> web.Response:
            return web.Response(body=b"", content_type="application/json")

        app = web.Application()
        app.router.add_get("/v1/event/stream", stream)

        async def list_jobs(request: web.Request) -> web.Response:
            stubs = [{**_job(j, 1), "Status": "running", "Stop": False} for j in sorted(self.jobs)]
            for stub in stubs:
                del stub["TaskGroups"]  # a JobListStub has no groups
            return web.json_response(stubs, headers={"X-Nomad-Index": "1"})

        app.router.add_post("/v1/jobs", register)
        app.router.add_get("/v1/jobs", list_jobs)
        app.router.add_get("/v1/allocations", empty)
        app.router.add_get("/v1/job/{id}/allocations", empty)
        app.router.add_get("/v1/job/{id}", read_job)
        app.router.add_get("/v1/client/fs/ls/{alloc}", empty)
        app.router.add_get("/v1/client/fs/logs/{alloc}", logs)
        return app

    async def _write(self, resp: Any, piece: list[bytes], marks: list[tuple[str, str]]) -> None:
        if not piece:
            return
        now = time.monotonic()
        for mark in marks:
            self.written.setdefault(mark, now)
        await resp.write(b"".join(piece))


def _bare(url: str, expect: int, cpu: int | None) -> dict[str, Any]:
    """The ceiling, in its own process on the server CPU."""
    cmd = [sys.executable, str(Path(__file__)), "bare", url, str(expect)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def _bare_reader(url: str, expect: int) -> dict[str, Any]:
    import aiohttp

    events, started = 0, None
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        rest = b""
        async for chunk in resp.content.iter_any():
            started = started or time.monotonic()
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                if line:
                    events += len(orjson.loads(line).get("Events") or ())
            if events >= expect:
                break
    seconds = time.monotonic() - (started or time.monotonic())
    return {"events": events, "seconds": round(seconds, 3), "events_s": events / seconds}


def _get(url: str, token: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read()


async def _sse(
    url: str, token: str, tasks: dict[str, str], seen: dict[tuple[str, str], float]
) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        async for raw in resp.content:
            if raw.startswith(b"data:"):
                data = orjson.loads(raw[5:])
                job = tasks.get(data.get("task_id", ""))
                if job is not None and data.get("applied"):
                    seen.setdefault((job, data["status"]), time.monotonic())


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _egw(
    workdir: Path, cpus: dict[str, int | None], jobs: int, quick: bool
) -> dict[str, Any]:
    import run as bench  # bench/run.py: the Server helper and the gateway's config
    from aiohttp import web

    ours = [f"egw-bench-{n:04d}" for n in range(max(1, jobs // 100))]
    lines, count = build(jobs, ours)
    replayer = Replayer(lines)
    runner = web.AppRunner(replayer.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"jobs": jobs, "ours": len(ours), "events": count}
    loop = asyncio.get_running_loop()
    bare = await loop.run_in_executor(
        None, _bare, f"{base}/v1/event/stream?bare=1", count, cpus["server"]
    )
    result["bare_events_s"] = round(bare["events_s"])
    cfg = bench._gateway_config(workdir, "nomad-stream")
    cfg["providers"]["nomad"] = {"enabled": True, "address": base, "log_grace_s": 1.0}
    gw = await loop.run_in_executor(
        None, lambda: bench.Server("gateway", workdir, cpus["server"], cfg, "nomad-stream")
    )
    try:
        tasks: dict[str, str] = {}
        for job in ours:
            status, body = await loop.run_in_executor(
                None,
                lambda job=job: bench._http(
                    "POST",
                    gw.base + "/v1/tasks",
                    {
                        "provider": "nomad",
                        "task": {"job_id": job, "image": "busybox", "command": "true"},
                    },
                ),
            )
            if status != 202:
                raise RuntimeError(f"submit answered {status}: {body}")
            tasks[body["id"]] = job
        seen: dict[tuple[str, str], float] = {}
        sse = asyncio.ensure_future(_sse(gw.base + "/v1/events", bench.TOKEN, tasks, seen))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        replayer.go.set()
        lags: list[float] = []
        done_at = None
        deadline = started + (30 if quick else 120)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            _, body = await loop.run_in_executor(None, _get, gw.base + "/readyz", bench.TOKEN)
            ns = json.loads(body)["providers"]["nomad"]["namespaces"]["default"]
            if ns.get("stream_lag_s") is not None:
                lags.append(ns["stream_lag_s"])
            if (ns.get("last_index") or 0) >= replayer.last_index:
                done_at = time.monotonic()
                break
        settle = time.monotonic() + 5
        while time.monotonic() < settle and len(seen) < 2 * len(ours):
            await asyncio.sleep(0.05)
        _, metrics = await loop.run_in_executor(None, _get, gw.base + "/metrics", bench.TOKEN)
        sse.cancel()
        delays = [
            (seen[key] - replayer.written[key]) * 1000
            for key in ((job, state) for job in ours for state in ("running", "succeeded"))
            if key in seen and key in replayer.written
        ]
        _, body = await loop.run_in_executor(None, _get, gw.base + "/readyz", bench.TOKEN)
        ns = json.loads(body)["providers"]["nomad"]["namespaces"]["default"]
        seconds = (done_at or time.monotonic()) - started
        result.update(
            egw_events_s=round(count / seconds) if done_at else None,
            seconds=round(seconds, 3),
            ratio=round(count / seconds / bare["events_s"], 2) if done_at else None,
            changes_expected=2 * len(ours),
            changes_seen=len(delays),
            delay_p50_ms=_pct(delays, 0.5),
            delay_p99_ms=_pct(delays, 0.99),
            delay_max_ms=max(delays) if delays else None,
            lag_max_s=max(lags) if lags else None,
            batches_skipped=ns.get("batches_skipped"),
            batches_decoded=ns.get("batches_decoded"),
            lag_metric_exported=b"egw_nomad_stream_lag_seconds" in metrics,
        )
        for key in ("delay_p50_ms", "delay_p99_ms", "delay_max_ms"):
            if result[key] is not None:
                result[key] = round(result[key], 1)
    finally:
        await loop.run_in_executor(None, gw.stop)
        await runner.cleanup()
    return result


def run(workdir: Path, cpus: dict[str, int | None], *, quick: bool) -> dict[str, Any]:
    if cpus.get("load") is not None:
        os.sched_setaffinity(0, {cpus["load"]})  # the replayer and SSE client: the load CPU
    return asyncio.run(_egw(workdir, cpus, 1_000 if quick else 10_000, quick))


def _goal(label: str, value: Any, goal: str, met: bool) -> str:
    return f"  goal: {label}: {value} (goal {goal}): {'met' if met else 'NOT met'}"


def render(part: dict[str, Any]) -> list[str]:
    if "error" in part:
        return [f"Nomad event stream: error {part['error']}"]
    ok_rate = part["egw_events_s"] is not None and part["egw_events_s"] >= GOAL_EVENTS_S
    p99 = part["delay_p99_ms"]
    ok_p99 = (
        p99 is not None and p99 <= GOAL_P99_MS and part["changes_seen"] == part["changes_expected"]
    )
    return [
        f"Nomad event stream: {part['jobs']} jobs ({part['ours']} egw's), {part['events']} events",
        f"  bare reader (aiohttp + orjson.loads): {part['bare_events_s']} events/s",
        f"  egw: {part['egw_events_s']} events/s ({part['ratio']} of the bare reader),"
        f" batches skipped undecoded {part['batches_skipped']}, decoded {part['batches_decoded']}",
        f"  egw's status changes on /v1/events:"
        f" {part['changes_seen']}/{part['changes_expected']},"
        f" delay p50 {part['delay_p50_ms']} ms, p99 {p99} ms, max {part['delay_max_ms']} ms;"
        f" stream lag seen up to {part['lag_max_s']} s"
        f" (metric exported: {part['lag_metric_exported']})",
        _goal("events/s consumed", part["egw_events_s"], f">= {GOAL_EVENTS_S:.0f}", ok_rate),
        _goal(
            "egw's status changes on SSE, p99 (none missing)", p99, f"<= {GOAL_P99_MS} ms", ok_p99
        ),
    ]


def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("bare",))
    ap.add_argument("url")
    ap.add_argument("expect", type=int)
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(json.dumps(asyncio.run(_bare_reader(args.url, args.expect))))


if __name__ == "__main__":
    _main()
