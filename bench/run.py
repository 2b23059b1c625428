"""egw performance benchmark: every figure next to a ceiling measured in the same run.

    .venv/bin/python bench/run.py [--quick] [--json report.json]

Three measurements (see bench/README.md for the method and how to read them):

1. HTTP: authenticated ``GET /v1/tasks/{id}`` requests/s of a real gateway
   process, as a ratio of a bare aiohttp hello-world process, both driven by
   the same load generator (wrk, else a Python fallback in its own process)
   with the same connection count, rounds alternated, median reported.
2. Writer: event appends/s through ``egw.store.Store``'s group-commit writer,
   against one transaction per row with plain aiosqlite on the same machine,
   and the same writer on PostgreSQL when a server answers.
3. SSE fan-out: N clients tail one local task printing 200 timestamped
   lines/s; per-line delay (p50/p99) and the gateway's RSS per connection.

Every loop is bounded in count and time; the whole run stops by itself
(about 2-3 minutes on 2 cores; ``--quick``: under 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: the parts in their own modules, each with ``run(workdir, cpus, *, quick)`` and
#: ``render(part)``; imported when used (some import this module for its helpers)
PARTS: dict[str, Any] = {
    name: (lambda module=module: importlib.import_module(module))
    for name, module in (
        ("webhooks", "_webhooks"),
        ("submits", "_submits"),
        ("peer", "_peer"),
        ("nomad-stream", "_nomad_stream"),
        ("restart", "_restart"),
        ("nomad-logs", "_nomad_logs"),
        ("inflight", "_inflight"),
        ("replicas", "_replicas"),
    )
}

HERE = Path(__file__).resolve().parent
PY = sys.executable
TOKEN = "bench-token-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: round one's 0.7 was retired once measured out of reach (see bench/README.md); 0.50 stands
GOAL_HTTP_RATIO = 0.5
GOAL_SSE_P99_MS = {1000: 100.0, 5000: 200.0}
GOAL_SSE_KB_PER_CONN = 12.0


# --- small process helpers -----------------------------------------------------------------------

_children: list[subprocess.Popen[Any]] = []
NICE = 0  # --nice: 0 leaves scheduling alone


def _spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """Start a child process; with --nice, in its own session (so its own scheduler
    autogroup, which Linux shares the CPU between) with that autogroup's nice value."""
    if NICE:
        kw["start_new_session"] = True
    proc = subprocess.Popen(cmd, **kw)
    _children.append(proc)
    if NICE:
        try:
            Path(f"/proc/{proc.pid}/autogroup").write_text(str(NICE))
        except OSError:
            pass
        try:
            os.setpriority(os.PRIO_PROCESS, proc.pid, NICE)
        except OSError:
            pass
    return proc


def _stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; only this process, by its pid."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc in _children:
        _children.remove(proc)


def _stop_all() -> None:
    for proc in _children:
        _stop(proc, 5.0)


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _cpu_times() -> dict[str, list[int]]:
    """Per-CPU jiffies from /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            out[name] = [int(v) for v in vals[:8]]
    return out


def _cpu_use(
    before: dict[str, list[int]], after: dict[str, list[int]]
) -> dict[str, dict[str, float]]:
    """Share of each CPU's time between two /proc/stat readings: busy (all but idle and
    iowait), and of it system, softirq and steal."""
    use = {}
    for cpu, a in after.items():
        d = [x - y for x, y in zip(a, before.get(cpu, a), strict=True)]
        total = sum(d) or 1
        use[cpu] = {
            "busy": round(1 - (d[3] + d[4]) / total, 3),
            "system": round(d[2] / total, 3),
            "softirq": round(d[6] / total, 3),
            "steal": round(d[7] / total, 3),
        }
    return use


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Server:
    """One server process of bench/_servers.py."""

    def __init__(
        self,
        kind: str,
        workdir: Path,
        cpu: int | None,
        config: dict[str, Any] | None = None,
        label: str = "",
        extra: list[str] | None = None,
    ) -> None:
        self.kind = kind
        name = f"{kind}-{label}" if label else kind
        self.ready = workdir / f"{name}.ready"
        self.ready.unlink(missing_ok=True)
        self.log = workdir / f"{name}.log"
        cmd = [PY, str(HERE / "_servers.py"), kind, "--ready", str(self.ready)]
        if config is not None:
            cfg_file = workdir / f"{name}.json"
            cfg_file.write_text(json.dumps(config))
            cmd += ["--config", str(cfg_file)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        cmd += extra or []
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = _spawn(cmd, stdout=self._out, stderr=subprocess.STDOUT, cwd=str(HERE.parent))
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                _stop(self.proc)
                raise RuntimeError(f"{kind} server did not start:\n{self.tail()}")
            time.sleep(0.02)
        port, pid = self.ready.read_text().split()
        self.port, self.pid = int(port), int(pid)
        self.base = f"http://127.0.0.1:{self.port}"

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        _stop(self.proc)
        self._out.close()


def _http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bool = False,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
            status = resp.status
            got = dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        data, status, got = exc.read(), exc.code, dict(exc.headers.items())
    if raw:
        return status, (data, got)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode("utf-8", "replace")


def _gateway_config(workdir: Path, name: str) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "sse_flush_ms": 25},
        "auth": {
            "tokens": [{"name": "bench", "token": TOKEN, "scopes": ["tasks:read", "tasks:write"]}]
        },
        "storage": {"path": str(workdir / f"{name}.db")},
        "providers": {"local": {"enabled": True, "max_concurrent": 4}},
        "logging": {"level": "info", "format": "json"},
    }


def _submit(gw: Server, command: str, args: list[str]) -> str:
    status, body = _http(
        "POST",
        gw.base + "/v1/tasks",
        {"provider": "local", "task": {"command": command, "args": args}},
    )
    if status != 202:
        raise RuntimeError(f"submit answered {status}: {body}")
    return str(body["id"])


def _wait_task(gw: Server, task_id: str, pred: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = _http("GET", f"{gw.base}/v1/tasks/{task_id}")
        if status == 200 and pred(body):
            return body  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task_id} not in the expected state after {timeout}s: {body}")
        time.sleep(0.05)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --- 1. HTTP: GET /v1/tasks/{id} vs hello-world ---------------------------------------------------

_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_PCT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)


def _wait4(proc: subprocess.Popen[Any], timeout: float) -> float:
    """Wait for a child and return its CPU seconds (user + system), bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            raise RuntimeError("load generator did not finish in time")
        time.sleep(0.02)


def _load(
    loadgen: str, port: int, path: str, seconds: float, conns: int, cpu: int | None, pid: int
) -> dict[str, Any]:
    """One load run against ``port``; rps, errors, the generator's and the server's CPU use."""
    header = f"Authorization: Bearer {TOKEN}"
    if loadgen == "wrk":
        cmd = [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-H",
            header,
            f"http://127.0.0.1:{port}{path}",
        ]
    else:
        cmd = [
            PY,
            str(HERE / "_pyload.py"),
            "--port",
            str(port),
            "--path",
            path,
            "--connections",
            str(conns),
            "--duration",
            str(seconds),
            "--header",
            header,
        ]
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    ticks0, t0, sys0 = _cpu_ticks(pid), time.monotonic(), _cpu_times()
    proc = _spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec)
    try:
        # wrk prints only at the end; its output is small, so the pipe cannot fill
        cpu_s = _wait4(proc, seconds + 30)
        out = proc.stdout.read().decode("utf-8", "replace") if proc.stdout else ""
    finally:
        if proc in _children:
            _children.remove(proc)
    wall = time.monotonic() - t0
    server_cpu = (_cpu_ticks(pid) - ticks0) / CLK_TCK / wall
    use = _cpu_use(sys0, _cpu_times())
    # CPU time of everything else on the machine (other users' tests...), in cores
    other = max(0.0, sum(u["busy"] for u in use.values()) - server_cpu - cpu_s / wall)
    if loadgen == "wrk":
        m = _WRK_RPS.search(out)
        if not m:
            raise RuntimeError(f"cannot read wrk output:\n{out}")
        non2xx = int(_WRK_NON2XX.search(out).group(1)) if _WRK_NON2XX.search(out) else 0  # type: ignore[union-attr]
        sock = _WRK_SOCKERR.search(out)
        pct = {
            q: float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u] for q, v, u in _WRK_PCT.findall(out)
        }
        return {
            "rps": float(m.group(1)),
            "non2xx": non2xx,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0,
            "latency_p50_ms": pct.get("50"),
            "latency_p99_ms": pct.get("99"),
            "loadgen_cpu": round(cpu_s / wall, 3),
            "server_cpu": round(server_cpu, 3),
            "other_cpu": round(other, 3),
            "cpus": use,
        }
    res = json.loads(out.strip().splitlines()[-1])
    return {
        "rps": res["requests"] / res["seconds"],
        "non2xx": res["non2xx"],
        "socket_errors": 0,
        "latency_p50_ms": None,
        "latency_p99_ms": None,
        "loadgen_cpu": round(cpu_s / wall, 3),
        "server_cpu": round(server_cpu, 3),
        "other_cpu": round(other, 3),
        "cpus": use,
    }


def bench_http(
    workdir: Path,
    cpus: dict[str, int | None],
    rounds: int,
    seconds: float,
    conns: int,
    warmup: float,
    loadgen: str = "auto",
) -> dict[str, Any]:
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    servers: list[Server] = []
    try:
        hello = Server("hello", workdir, cpus["server"])
        servers.append(hello)
        gw = Server(
            "gateway", workdir, cpus["server"], _gateway_config(workdir, "http"), label="http"
        )
        servers.append(gw)
        task_id = _submit(gw, PY, ["-c", "print('bench')"])
        _wait_task(gw, task_id, lambda t: t["status"] == "succeeded", 20)
        path = f"/v1/tasks/{task_id}"
        status, (body, headers) = _http("GET", gw.base + path, raw=True)
        assert status == 200 and json.loads(body)["id"] == task_id, (status, body)
        status, _ = _http(
            "GET", gw.base + path, headers={"Authorization": "Bearer wrong-token-0123456789"}
        )
        assert status == 401, f"a wrong token was answered {status}"
        # the framework's own floor for this response: same route shape, body and headers
        keep = {
            k: v
            for k, v in headers.items()
            if k.lower() in ("etag", "x-egw-index", "cache-control", "x-request-id")
        }
        shape = workdir / "shape.json"
        shape.write_text(
            json.dumps(
                {
                    "body": body.decode(),
                    "headers": keep,
                    "content_type": headers.get("Content-Type", "application/json").split(";")[0],
                }
            )
        )
        shaped = Server("shaped", workdir, cpus["server"], extra=["--shape", str(shape)])
        servers.append(shaped)
        sides = {"hello": (hello, "/"), "shaped": (shaped, path), "egw": (gw, path)}
        names = list(sides)
        if warmup > 0:
            for _name, (srv, p) in sides.items():
                _load(loadgen, srv.port, p, warmup, conns, cpus["load"], srv.pid)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in names}
        ratios, shaped_ratios, floor_ratios = [], [], []
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                srv, p = sides[name]
                runs[name].append(
                    _load(loadgen, srv.port, p, seconds, conns, cpus["load"], srv.pid)
                )
            ratios.append(runs["egw"][-1]["rps"] / runs["hello"][-1]["rps"])
            shaped_ratios.append(runs["shaped"][-1]["rps"] / runs["hello"][-1]["rps"])
            floor_ratios.append(runs["egw"][-1]["rps"] / runs["shaped"][-1]["rps"])
        errors = sum(x["non2xx"] + x["socket_errors"] for xs in runs.values() for x in xs)
        med = {k: _median([x["rps"] for x in v]) for k, v in runs.items()}
        ratio = _median(ratios)
        loadgen_cpu = max(x["loadgen_cpu"] for xs in runs.values() for x in xs)
        return {
            "loadgen": loadgen,
            "connections": conns,
            "rounds": rounds,
            "seconds_per_run": seconds,
            "hello_rps_median": round(med["hello"], 1),
            "shaped_rps_median": round(med["shaped"], 1),
            "egw_rps_median": round(med["egw"], 1),
            "ratio_median_of_rounds": round(ratio, 3),
            "ratio_of_medians": round(med["egw"] / med["hello"], 3),
            "ratios": [round(x, 3) for x in ratios],
            "shaped_ratio_median_of_rounds": round(_median(shaped_ratios), 3),
            # egw against aiohttp alone answering the same response: what egw's own work costs
            "egw_over_shaped_median_of_rounds": round(_median(floor_ratios), 3),
            "egw_us_per_request_over_shaped": round(1e6 / med["egw"] - 1e6 / med["shaped"], 1),
            "errors": errors,
            "loadgen_cpu_max": loadgen_cpu,
            "loadgen_saturated": loadgen_cpu > 0.9,
            "runs": runs,
            "goal": GOAL_HTTP_RATIO,
            "met": ratio >= GOAL_HTTP_RATIO and errors == 0,
        }
    finally:
        for srv in servers:
            srv.stop()


# --- 2. Writer: group commit vs one transaction per row -------------------------------------------


async def _writer_group(path: str, seconds: float, workers: int, ntasks: int) -> dict[str, Any]:
    from egw.core.model import Observation, Task, TaskState, new_task_id, utcnow
    from egw.store import Store

    store = Store(path)
    await store.open()
    try:
        ids = []
        for i in range(ntasks):
            now = utcnow()
            draft = Task(
                id=new_task_id(),
                provider="local",
                spec={"command": "true", "args": []},
                name=f"bench-{i}",
                created_at=now,
                updated_at=now,
            )
            task, _ = await store.writer.create_task(draft)
            ids.append(task.id)
        loop = asyncio.get_running_loop()
        done = 0
        counting = False
        stop_at = 0.0

        async def worker(w: int) -> None:
            nonlocal done
            task_id = ids[w % ntasks]
            i = 0
            while loop.time() < stop_at:
                i += 1
                if i % 2:
                    await store.writer.progress(
                        task_id, "progress", {"worker": w, "step": i}, source="bench"
                    )
                else:
                    await store.writer.observe(
                        task_id, Observation(state=TaskState.RUNNING), source="bench"
                    )
                if counting:
                    done += 1

        # batch sizes: the writer reports each commit's op count (batch_listeners), or keeps them
        sizes: list[int] = []
        listeners = getattr(store.writer, "batch_listeners", None)
        if listeners is not None:
            listeners.append(lambda k: sizes.append(k) if counting else None)
        # a short warm-up, then count only completed appends in the measured window
        stop_at = loop.time() + 0.3 + seconds
        tasks = [asyncio.create_task(worker(w)) for w in range(workers)]
        try:
            await asyncio.sleep(0.3)
            counting = True
            kept = getattr(store.writer, "batch_sizes", None)
            kept0 = len(kept) if kept is not None else 0
            t0 = loop.time()
            await asyncio.wait_for(asyncio.gather(*tasks), seconds + 30)
            elapsed = loop.time() - t0
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if listeners is None and kept is not None:
            sizes = list(kept[kept0:])
        rows = await store.reader.max_seq()  # (nothing is pruned: the number of rows)
        return {
            "appends_per_s": done / elapsed,
            "appends": done,
            "seconds": elapsed,
            "batches": len(sizes),
            "batch_size_median": _median([float(x) for x in sizes]) if sizes else None,
            "batch_size_mean": (sum(sizes) / len(sizes)) if sizes else None,
            "event_rows": rows,
        }
    finally:
        await store.close()


_EVENT_SQL = (
    "INSERT INTO events (task_id, provider, kind, status, prev_status, applied, reason, exit_code,"
    " actor, source, delivery_id, at, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _event_row(task_id: str, w: int, i: int) -> tuple[Any, ...]:
    return (
        task_id,
        "local",
        "progress",
        "running",
        "running",
        0,
        None,
        None,
        None,
        "bench",
        None,
        "2026-01-01T00:00:00.000Z",
        json.dumps({"worker": w, "step": i}),
    )


async def _writer_per_row(
    path: str, seconds: float, workers: int, ntasks: int, mode: str
) -> dict[str, Any]:
    """Plain aiosqlite, the same schema and pragmas as egw (WAL, synchronous=NORMAL), one
    commit per append, the same ``workers`` concurrent appenders:

    * ``txn``: what the writer would do with batches of one: BEGIN IMMEDIATE, the event
      row, the task's projection (its index), COMMIT; appenders take turns (a lock);
    * ``autocommit``: the cheapest commit per row there is: a lone INSERT of the event
      row, its own transaction, the appenders' statements pipelined on the connection.
    """
    import aiosqlite

    from egw.store import Store

    # egw's schema, made by egw (Store.open migrates), then used with plain aiosqlite
    schema = Store(path)
    await schema.open()
    await schema.close()
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        ids = [f"t_{k:032x}" for k in range(ntasks)]
        for k, task_id in enumerate(ids):
            await conn.execute(
                "INSERT INTO tasks"
                " (id, submit_seq, provider, spec, status, created_at, updated_at, idx)"
                " VALUES (?, ?, 'local', '{}', 'running', ?, ?, 0)",
                (task_id, k + 1, "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z"),
            )
        loop = asyncio.get_running_loop()
        lock = asyncio.Lock()
        done = 0
        counting = False
        stop_at = loop.time() + 0.3 + seconds

        async def worker(w: int) -> None:
            nonlocal done
            task_id = ids[w % ntasks]
            i = 0
            while loop.time() < stop_at:
                i += 1
                if mode == "autocommit":
                    await conn.execute(_EVENT_SQL, _event_row(task_id, w, i))
                else:
                    async with lock:
                        await conn.execute("BEGIN IMMEDIATE")
                        cur = await conn.execute(_EVENT_SQL, _event_row(task_id, w, i))
                        await conn.execute(
                            "UPDATE tasks SET idx = ?, updated_at = ? WHERE id = ?",
                            (cur.lastrowid, "2026-01-01T00:00:00.000Z", task_id),
                        )
                        await conn.execute("COMMIT")
                if counting:
                    done += 1

        tasks = [asyncio.create_task(worker(w)) for w in range(workers)]
        try:
            await asyncio.sleep(0.3)
            counting = True
            t0 = loop.time()
            await asyncio.wait_for(asyncio.gather(*tasks), seconds + 30)
            elapsed = loop.time() - t0
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {"appends_per_s": done / elapsed, "appends": done, "seconds": elapsed}
    finally:
        await conn.close()


def bench_writer(
    workdir: Path, rounds: int, seconds: float, workers: int, ntasks: int
) -> dict[str, Any]:
    import logging

    import _pg
    import structlog

    # the store logs its migrations: keep this process's output to the report
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    runs: dict[str, list[dict[str, Any]]] = {"group": [], "txn": [], "autocommit": []}
    # the same writer on PostgreSQL (storage.url), in the same rounds, when a server answers
    pg_missing = _pg.unavailable()
    if pg_missing is None:
        runs["group_pg"] = []
    names = list(runs)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            path = str(workdir / f"writer-{name}-{r}.db")
            if name == "group_pg":
                url = _pg.create()
                try:
                    res = asyncio.run(_writer_group(url, seconds, workers, ntasks))
                finally:
                    _pg.drop(url)
            elif name == "group":
                res = asyncio.run(_writer_group(path, seconds, workers, ntasks))
            else:
                res = asyncio.run(_writer_per_row(path, seconds, workers, ntasks, name))
            runs[name].append(res)
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
    med = {k: _median([x["appends_per_s"] for x in v]) for k, v in runs.items()}
    return {
        "workers": workers,
        "tasks": ntasks,
        "rounds": rounds,
        "seconds_per_run": seconds,
        "group_commit_appends_per_s": round(med["group"], 1),
        "per_row_txn_appends_per_s": round(med["txn"], 1),
        "per_row_autocommit_appends_per_s": round(med["autocommit"], 1),
        "speedup": round(med["group"] / med["txn"], 2),
        "speedup_vs_autocommit": round(med["group"] / med["autocommit"], 2),
        "postgresql_group_commit_appends_per_s": (
            round(med["group_pg"], 1) if "group_pg" in med else None
        ),
        "postgresql_missing": pg_missing,
        "batch_size_median": _median(
            [x["batch_size_median"] for x in runs["group"] if x["batch_size_median"] is not None]
        ),
        "runs": runs,
    }


# --- 3. SSE fan-out -------------------------------------------------------------------------------


class Lines:
    """Lines of a child's stdout, read by a thread, so the parent can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.q: queue.Queue[str | None] = queue.Queue()
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.q.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.q.put(None)

    def expect(self, tag: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {tag} from the clients in {timeout}s; got: {seen[-5:]}")
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"the clients exited before {tag}; got: {seen[-5:]}")
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1 :])  # type: ignore[no-any-return]
            seen.append(line)


def _clients(
    mode: str, gw: Server, task_id: str, n: int, cpu: int | None, deadline: float
) -> tuple[subprocess.Popen[bytes], Lines]:
    cmd = [
        PY,
        str(HERE / "_sse_clients.py"),
        "--mode",
        mode,
        "--port",
        str(gw.port),
        "--task",
        task_id,
        "--token",
        TOKEN,
        "--n",
        str(n),
        "--connect-timeout",
        "60",
        "--deadline",
        str(deadline),
    ]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = _spawn(cmd, stdout=subprocess.PIPE)
    return proc, Lines(proc)


def _wait_ready_line(gw: Server, task_id: str, timeout: float) -> None:
    """Until the task's first line (``ready``) is in the log: it runs and waits for the go."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = _http("GET", f"{gw.base}/v1/tasks/{task_id}/logs")
        if status == 200 and isinstance(body, str) and "ready" in body:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ticker task printed nothing in {timeout}s: {status} {body!r}")
        time.sleep(0.05)


def _warm_sse(gw: Server, task_id: str) -> None:
    """One SSE connection opened and closed, so lazily built code paths don't count as memory."""
    import socket

    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(
            f"GET /v1/tasks/{task_id}/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Accept: text/event-stream\r\nConnection: close\r\n\r\n".encode()
        )
        got = b""
        deadline = time.monotonic() + 10
        while b"event: status" not in got and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        if b"event: status" not in got:
            raise RuntimeError(f"the warm-up SSE request failed: {got[:300]!r}")


def _sse_run(
    workdir: Path,
    cpus: dict[str, int | None],
    n: int,
    rate: float,
    seconds: float,
    target: str,
    settle: float,
) -> dict[str, Any]:
    """One fan-out run: ``target`` is "egw" (the gateway, a local task) or "ref" (the
    bare-aiohttp reference server of bench/_servers.py, the same design, nothing else)."""
    probes = min(n, max(10, min(200, n // 10)))
    sinks = n - probes
    go = workdir / f"go-{target}-{n}"
    stats_file = workdir / f"stats-{target}-{n}.json"
    stats_file.unlink(missing_ok=True)
    if target == "egw":
        srv = Server(
            "gateway",
            workdir,
            cpus["server"],
            _gateway_config(workdir, f"sse-{n}"),
            label=f"sse-{n}",
            extra=["--stats", str(stats_file)],
        )
    else:
        srv = Server(
            "fanout",
            workdir,
            cpus["server"],
            label=f"{n}",
            extra=["--stats", str(stats_file), "--ticker", f"{go},{rate},{seconds}"],
        )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if target == "egw":
            task_id = _submit(
                srv, PY, [str(HERE / "_ticker_task.py"), str(go), str(rate), str(seconds), "150"]
            )
            _wait_task(srv, task_id, lambda t: t["status"] == "running", 20)
            _wait_ready_line(srv, task_id, 20)
        else:
            task_id = "ref"
        _warm_sse(srv, task_id)
        time.sleep(settle)
        rss_before = _status_kb(srv.pid, "VmRSS")
        fds_before = _fd_count(srv.pid)
        deadline = 60 + seconds + 60  # client processes give up by themselves after this
        pproc, plines = _clients("probe", srv, task_id, probes, cpus["load"], deadline)
        procs.append(pproc)
        pconn = plines.expect("CONNECTED", 90)
        sconn: dict[str, Any] = {"live": 0, "failures": {}, "connect_s": 0.0, "cpu_s": 0.0}
        slines = None
        if sinks:
            sproc, slines = _clients("sink", srv, task_id, sinks, cpus["load"], deadline)
            procs.append(sproc)
            sconn = slines.expect("CONNECTED", 90)
        time.sleep(settle)
        rss_after = _status_kb(srv.pid, "VmRSS")
        fds_after = _fd_count(srv.pid)
        live = pconn["live"] + sconn["live"]
        ticks0, t_go, sys0 = _cpu_ticks(srv.pid), time.monotonic(), _cpu_times()
        os.kill(srv.pid, signal.SIGUSR1)  # the server's stats window starts now
        go.write_text("go")
        pres = plines.expect("RESULT", seconds + 90)
        sres = slines.expect("RESULT", 60) if slines is not None else {}
        t_end = time.monotonic()
        srv_cpu = (_cpu_ticks(srv.pid) - ticks0) / CLK_TCK / (t_end - t_go)
        cpu_use = _cpu_use(sys0, _cpu_times())
        os.kill(srv.pid, signal.SIGUSR2)
        hwm = _status_kb(srv.pid, "VmHWM")
        status = "n/a"
        if target == "egw":
            final = _wait_task(
                srv, task_id, lambda t: t["status"] not in ("pending", "queued", "running"), 20
            )
            status = final["status"]
        for p in procs:
            p.wait(20)
        server_stats: dict[str, Any] = {}
        for _ in range(100):
            if stats_file.exists():
                server_stats = json.loads(stats_file.read_text())
                break
            time.sleep(0.02)
        expected = int(rate * seconds)
        client_cpu = (pres["cpu_s"] - pconn["cpu_s"] + (sres.get("cpu_s", 0) - sconn["cpu_s"])) / (
            t_end - t_go
        )
        complete = (
            pres["lines_min"] == expected
            and (not sinks or sres["lines_min"] == expected)
            and live == n
        )
        server_cpu_id = f"cpu{cpus['server']}" if cpus["server"] is not None else None
        # everything else on the machine (the ticker task is tiny), in cores
        other = max(0.0, sum(u["busy"] for u in cpu_use.values()) - srv_cpu - client_cpu)
        return {
            "target": target,
            "clients": n,
            "probe_clients": probes,
            "sink_clients": sinks,
            "live": live,
            "connect_failures": {**pconn["failures"], **sconn["failures"]},
            "connect_s": max(pconn["connect_s"], sconn["connect_s"]),
            "lines_expected": expected,
            "lines_per_client_min": min(pres["lines_min"], sres.get("lines_min", expected)),
            "all_lines_delivered": complete,
            "streams_ended": pres["ended"] + sres.get("ended", 0),
            "task_status": status,
            "delay_app_ms": pres["app"],
            "delay_kernel_ms": pres["kernel"],
            "delay_app_by_second": pres.get("app_by_second", []),
            "rss_before_kb": rss_before,
            "rss_after_kb": rss_after,
            "rss_peak_kb": hwm,
            "fds_before": fds_before,
            "fds_after": fds_after,
            "kb_per_connection": round((rss_after - rss_before) / live, 2) if live else None,
            "server_cpu_while_streaming": round(srv_cpu, 3),
            "server_cpu_busy_while_streaming": cpu_use.get(server_cpu_id, {}).get("busy")
            if server_cpu_id
            else None,
            "clients_cpu_while_streaming": round(client_cpu, 3),
            "other_cpu_while_streaming": round(other, 3),
            "cpus_while_streaming": cpu_use,
            "server_stats": server_stats,
        }
    finally:
        for p in procs:
            _stop(p, 5)
        srv.stop()


def bench_sse(
    workdir: Path,
    cpus: dict[str, int | None],
    n: int,
    rate: float,
    seconds: float,
    reference: bool,
    settle: float,
) -> dict[str, Any]:
    res = _sse_run(workdir, cpus, n, rate, seconds, "egw", settle)
    if reference:
        try:
            res["reference"] = _sse_run(workdir, cpus, n, rate, seconds, "ref", settle)
        except Exception as exc:  # noqa: BLE001 - reported; the egw figures stand
            res["reference"] = {"error": repr(exc)}
    p99 = res["delay_app_ms"]["p99_ms"]
    goal_p99 = GOAL_SSE_P99_MS.get(n)
    res["goal_p99_ms"] = goal_p99
    res["p99_met"] = (
        None
        if goal_p99 is None
        else (p99 is not None and p99 <= goal_p99 and res["all_lines_delivered"])
    )
    res["goal_kb_per_connection"] = GOAL_SSE_KB_PER_CONN
    kb = res["kb_per_connection"]
    res["memory_met"] = kb is not None and kb <= GOAL_SSE_KB_PER_CONN
    return res


# --- report ---------------------------------------------------------------------------------------


def _goal_line(label: str, value: str, goal: str, met: bool | None) -> str:
    mark = "n/a" if met is None else ("MET" if met else "MISSED")
    return f"  {label:<44} {value:>14}   goal {goal:<12} {mark}"


def render(report: dict[str, Any]) -> str:
    out = []
    m = report["meta"]
    out.append(
        "egw benchmark"
        + (" (QUICK: tiny durations, figures are not meaningful)" if m["quick"] else "")
    )
    out.append(
        f"  python {m['python']}, aiohttp {m['aiohttp']}, {m['cpus']} CPU(s) usable;"
        f" pinning: {m['pinning']}"
    )
    out.append(
        f"  niceness {m['niceness']}; load average at start {' '.join(m['loadavg_start'])}, at end "
        f"{' '.join(m['loadavg_end'])}; total {m['seconds']:.1f} s"
    )
    goals = []
    h = report.get("http")
    out.append("")
    out.append("1. GET /v1/tasks/{id} (authenticated) vs bare aiohttp hello-world")
    if h is None:
        out.append("  not run")
    elif "error" in h:
        out.append(f"  ERROR: {h['error']}")
    else:
        gen = h["loadgen"] if h["loadgen"] == "wrk" else "Python fallback (_pyload.py, own process)"
        out.append(
            f"  load generator: {gen},"
            f" {h['connections']} connections, "
            f"{h['rounds']} rounds x {h['seconds_per_run']} s per side, alternated"
        )
        out.append(f"  hello-world       median {h['hello_rps_median']:>10.1f} req/s")
        out.append(
            f"  aiohttp, egw-shaped median {h['shaped_rps_median']:>8.1f} req/s = "
            f"{h['shaped_ratio_median_of_rounds']:.3f} of hello-world (no middleware, egw's route,"
            " body and headers: the framework's floor for this response)"
        )
        out.append(f"  egw               median {h['egw_rps_median']:>10.1f} req/s")
        if "egw_over_shaped_median_of_rounds" in h:
            out.append(
                f"  egw / egw-shaped  {h['egw_over_shaped_median_of_rounds']:.3f}: egw's own work"
                f" (auth, request id, log line, metrics, lookup) costs"
                f" {h['egw_us_per_request_over_shaped']:.1f} us a request on this core"
            )
        out.append(f"  egw per-round ratios {h['ratios']}; errors (non-2xx + socket) {h['errors']}")
        for side in ("hello", "shaped", "egw"):
            xs = h["runs"][side]
            lat = [x["latency_p99_ms"] for x in xs if x["latency_p99_ms"] is not None]
            out.append(
                f"  {side:<6} server CPU {_median([x['server_cpu'] for x in xs]):.2f} core,"
                f" load generator CPU {_median([x['loadgen_cpu'] for x in xs]):.2f} core,"
                f" other processes {_median([x.get('other_cpu', 0) for x in xs]):.2f} core"
                + (f", latency p99 {_median(lat):.2f} ms" if lat else "")
            )
        if h["loadgen_saturated"]:
            out.append("  WARNING: the load generator used > 0.9 core: it may be the bottleneck")
        goals.append(
            _goal_line(
                "egw / hello-world req/s (median of rounds)",
                f"{h['ratio_median_of_rounds']:.3f}",
                f">= {GOAL_HTTP_RATIO}",
                h["met"],
            )
        )
        out.append(goals[-1])
    w = report.get("writer")
    out.append("")
    out.append(
        "2. Event appends/s: Store writer (group commit) vs one transaction per row"
        " (plain aiosqlite)"
    )
    if w is None:
        out.append("  not run")
    elif "error" in w:
        out.append(f"  ERROR: {w['error']}")
    else:
        out.append(
            f"  {w['workers']} concurrent appenders on {w['tasks']} tasks, {w['rounds']} rounds x "
            f"{w['seconds_per_run']} s, alternated; median batch {w['batch_size_median']}"
        )
        out.append(
            "  one transaction per append (event + projection)  "
            f"{w['per_row_txn_appends_per_s']:>10.1f} appends/s"
        )
        out.append(
            "  autocommit INSERT per event (cheapest per-row)  "
            f"{w['per_row_autocommit_appends_per_s']:>10.1f} appends/s"
        )
        out.append(
            "  Store writer, group commit                       "
            f"{w['group_commit_appends_per_s']:>10.1f} appends/s"
        )
        out.append(
            f"  group-commit speed-up: {w['speedup']:.2f} x over a transaction per append, "
            f"{w['speedup_vs_autocommit']:.2f} x over autocommit inserts"
        )
        pg = w.get("postgresql_group_commit_appends_per_s")
        if pg is not None:
            out.append(
                "  Store writer on PostgreSQL (storage.url)        "
                f"{pg:>10.1f} appends/s ({pg / w['group_commit_appends_per_s']:.2f} x SQLite's;"
                " one advisory lock per batch)"
            )
        elif w.get("postgresql_missing"):
            out.append(f"  Store writer on PostgreSQL: not run ({w['postgresql_missing']})")
    for s in report.get("sse", []):
        out.append("")
        if "error" in s:
            out.append(f"3. SSE fan-out, {s.get('clients')} clients: ERROR: {s['error']}")
            goals.append(_goal_line(f"SSE {s.get('clients')} clients", "error", "", False))
            continue
        n = s["clients"]
        out.append(
            f"3. SSE fan-out: {n} clients ({s['probe_clients']} timing probes + "
            f"{s['sink_clients']} sinks) "
            f"tailing one task at {report['meta']['sse_rate']:.0f} lines/s for "
            f"{report['meta']['sse_seconds']:.0f} s"
        )
        ref = s.get("reference")
        rows = [("egw", s)] + ([("reference", ref)] if ref and "error" not in ref else [])
        for name, r in rows:
            a, k = r["delay_app_ms"], r["delay_kernel_ms"]
            st = r.get("server_stats") or {}
            lag, fl = st.get("loop_lag") or {}, st.get("flush") or {}
            gc2 = (st.get("gc") or {}).get("2") or {}
            out.append(
                f"  [{name}] live {r['live']}/{n} in {r['connect_s']:.1f} s, failures "
                f"{r['connect_failures'] or 'none'}; lines "
                f"{r['lines_per_client_min']}/{r['lines_expected']} "
                f"per client (min), all delivered: {r['all_lines_delivered']}"
                + (f"; task {r['task_status']}" if name == "egw" else "")
            )
            out.append(
                f"  [{name}] delay print->client read    p50 {a['p50_ms']} ms, "
                f"p90 {a['p90_ms']} ms, "
                f"p99 {a['p99_ms']} ms, max {a['max_ms']} ms ({a['count']} samples)"
            )
            out.append(
                f"  [{name}] delay print->socket (kernel) p50 {k['p50_ms']} ms, "
                f"p90 {k['p90_ms']} ms, "
                f"p99 {k['p99_ms']} ms, max {k['max_ms']} ms"
            )
            secs = r.get("delay_app_by_second") or []
            if secs:
                out.append(
                    f"  [{name}] p99 by second of output: "
                    + " ".join(f"{x['p99_ms']:.0f}" for x in secs)
                    + " ms"
                )
            out.append(
                f"  [{name}] RSS {r['rss_before_kb']} -> {r['rss_after_kb']} KB = "
                f"{r['kb_per_connection']} KB "
                f"per connection (peak {r['rss_peak_kb']} KB); "
                f"fds {r['fds_before']} -> {r['fds_after']}"
            )
            out.append(
                f"  [{name}] CPU while streaming: server process "
                f"{r['server_cpu_while_streaming']:.2f} core, "
                f"clients {r['clients_cpu_while_streaming']:.2f} core, other processes "
                f"{r['other_cpu_while_streaming']:.2f} core; "
                + ", ".join(
                    f"{c} busy {u['busy']:.0%} (sys {u['system']:.0%}, softirq {u['softirq']:.0%})"
                    for c, u in r["cpus_while_streaming"].items()
                )
            )
            if st:
                out.append(
                    f"  [{name}] server: tick flush p50 {fl.get('p50_ms')} ms, "
                    f"p99 {fl.get('p99_ms')} ms, "
                    f"max {fl.get('max_ms')} ms; loop lag p99 {lag.get('p99_ms')} ms, "
                    f"max {lag.get('max_ms')} ms;"
                    f" gen-2 GC {gc2.get('count', 0)}x, max {gc2.get('max_ms', 0)} ms"
                )
                stalls = st.get("stalls_over_50ms") or []
                if stalls:
                    out.append(
                        f"  [{name}] server: loop stalls > 50 ms (s after go: ms): "
                        + ", ".join(f"{t:.1f}: {ms:.0f}" for t, ms in sorted(stalls))
                    )
        if ref and "error" in ref:
            out.append(f"  [reference] ERROR: {ref['error']}")
        a = s["delay_app_ms"]
        if s["goal_p99_ms"] is not None:
            goals.append(
                _goal_line(
                    f"SSE {n} clients: delay p99",
                    f"{a['p99_ms']} ms",
                    f"<= {s['goal_p99_ms']:.0f} ms",
                    s["p99_met"],
                )
            )
            out.append(goals[-1])
        goals.append(
            _goal_line(
                f"SSE {n} clients: gateway memory / connection",
                f"{s['kb_per_connection']} KB",
                f"<= {GOAL_SSE_KB_PER_CONN:.0f} KB",
                s["memory_met"],
            )
        )
        out.append(goals[-1])
        other = s.get("other_cpu_while_streaming", 0)
        if other > 0.25:
            out.append(
                f"  NOTE: other processes on this machine used {other:.2f} core"
                " while the gateway streamed: "
                "its delays are pessimistic; compare them with the reference run's"
            )
    for name, module in PARTS.items():
        if name in report:
            lines = module().render(report[name])
            out += ["", *lines]
            goals += [
                line
                for line in lines
                if line.endswith(("MET", "MISSED")) or line.lstrip().startswith("goal:")
            ]
    out.append("")
    out.append("Goals")
    out.extend(goals or ["  (none measured)"])
    return "\n".join(out)


#: parts that live in their own module ``bench/_<part>.py`` (``run`` and ``render``)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny durations and 50 SSE clients: a smoke test (< 30 s)",
    )
    ap.add_argument("--json", help="also write the report as JSON to this path")
    ap.add_argument(
        "--only",
        choices=("http", "writer", "sse", *PARTS),
        action="append",
        help="run only these parts (repeatable); default: all",
    )
    ap.add_argument(
        "--sse-clients", type=int, action="append", help="SSE client counts (default 1000 and 5000)"
    )
    ap.add_argument(
        "--keep", action="store_true", help="keep the work folder (databases, server logs)"
    )
    ap.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="HTTP load generator: wrk if installed (auto), else a Python one in its own process",
    )
    ap.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the bare-aiohttp fan-out reference run of each SSE client count",
    )
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the servers, load generator and clients in their own scheduler groups"
        " with this nice"
        " value (e.g. -10, needs root), so other work on the machine disturbs them less; it also"
        " slows that other work down. Default 0: off",
    )
    args = ap.parse_args(argv)

    started = time.monotonic()
    global NICE
    NICE = args.nice
    niceness = args.nice
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    usable = sorted(os.sched_getaffinity(0))
    cpus: dict[str, int | None] = {"server": None, "load": None}
    if len(usable) >= 2:
        cpus = {"server": usable[0], "load": usable[1]}
    pinning = (
        f"servers on CPU {cpus['server']}, load generator / SSE clients on CPU {cpus['load']}"
        if cpus["server"] is not None
        else "none (fewer than 2 CPUs usable)"
    )
    parts = args.only or ["http", "writer", "sse", *PARTS]
    if args.quick:
        http_kw = {"rounds": 2, "seconds": 1.0, "conns": 32, "warmup": 0.0}
        writer_kw = {"rounds": 1, "seconds": 0.5, "workers": 64, "ntasks": 4}
        sse_ns, sse_seconds, settle = args.sse_clients or [50], 2.0, 0.3
    else:
        http_kw = {"rounds": 5, "seconds": 3.0, "conns": 64, "warmup": 1.0}
        writer_kw = {"rounds": 3, "seconds": 2.0, "workers": 256, "ntasks": 8}
        sse_ns, sse_seconds, settle = args.sse_clients or [1000, 5000], 8.0, 1.0
    rate = 200.0

    import aiohttp

    report: dict[str, Any] = {
        "meta": {
            "quick": args.quick,
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "cpus": len(usable),
            "pinning": pinning,
            "niceness": niceness,
            "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "sse_rate": rate,
            "sse_seconds": sse_seconds,
        }
    }
    workdir = Path(tempfile.mkdtemp(prefix="egw-bench-"))
    failed = False
    try:
        # the in-process writer runs first, while no server competes for the CPUs
        if "writer" in parts:
            try:
                report["writer"] = bench_writer(workdir, **writer_kw)
            except Exception as exc:  # noqa: BLE001 - reported; the other parts still run
                failed = True
                report["writer"] = {"error": repr(exc)}
        if "http" in parts:
            try:
                report["http"] = bench_http(workdir, cpus, loadgen=args.loadgen, **http_kw)
            except Exception as exc:  # noqa: BLE001 - reported; the other parts still run
                failed = True
                report["http"] = {"error": repr(exc)}
        if "sse" in parts:
            report["sse"] = []
            for n in sse_ns:
                try:
                    report["sse"].append(
                        bench_sse(
                            workdir, cpus, n, rate, sse_seconds, not args.no_reference, settle
                        )
                    )
                except Exception as exc:  # noqa: BLE001 - reported; the other parts still run
                    failed = True
                    report["sse"].append({"clients": n, "error": repr(exc)})
        for name in (p for p in PARTS if p in parts):
            try:
                report[name] = PARTS[name]().run(workdir, cpus, quick=args.quick)
            except Exception as exc:  # noqa: BLE001 - reported; the other parts still run
                failed = True
                report[name] = {"error": repr(exc)}
    finally:
        _stop_all()
        if args.keep:
            print(f"work folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["meta"]["seconds"] = round(time.monotonic() - started, 1)
    report["meta"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
