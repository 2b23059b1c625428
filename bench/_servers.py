"""The servers the benchmark measures, each run as its own process.

    python bench/_servers.py hello   --ready FILE [--cpu N]
    python bench/_servers.py shaped  --ready FILE --shape FILE.json [--cpu N]
    python bench/_servers.py gateway --ready FILE --config FILE.json [--cpu N] [--stats FILE]
    python bench/_servers.py fanout  --ready FILE --ticker GO,RATE,SECONDS [--cpu N] [--stats FILE]

All listen on 127.0.0.1 on a port the kernel picks, write ``"<port> <pid>"``
to the ``--ready`` file once they accept connections, and stop on SIGTERM or
SIGINT. All are served the same way (an ``AppRunner`` and a ``TCPSite`` with
the same backlog, no access log), so only the application differs:

* ``hello``: a bare aiohttp application, ``GET /`` answers ``Hello, World!``
  (the ceiling of ``GET /v1/tasks/{id}``);
* ``shaped``: what aiohttp alone costs for a response shaped like egw's: no
  middleware (egw has none either: its edge wraps each handler), the route
  ``/v1/tasks/{id}``, and the very body and headers egw answered (read from
  ``--shape``), with no egw code;
* ``gateway``: ``egw.web.app.create_app(parse_config(config, {}))`` with
  logging configured as a server would (``configure_logging``: the canonical
  JSON line per request goes to this process's stdout, which the benchmark
  points at a file), and the start-up's heap frozen as ``egw serve`` freezes it
  (``freeze_startup_heap``);
* ``fanout``: the ceiling of the SSE fan-out: the same design as
  ``egw.web.sse`` (one pre-framed HTTP chunk per tick written straight to each
  client's transport, same framing, same 25 ms tick) in a bare aiohttp
  application, without egw's store, hub, auth, edge and replay. It runs
  the ticker task itself and tails its stdout. Any ``GET`` path is a stream.

``--cpu N`` pins the process (and so every thread and child it starts later:
aiosqlite's threads, the task subprocesses) to CPU N before anything else runs.

``--stats FILE``: SIGUSR1 starts (or restarts) a measurement window, SIGUSR2
writes the window's figures to FILE as JSON: event-loop lag (a 10 ms probe
sleep, how late it wakes), garbage-collector pauses per generation, and the
duration of each tick's flush (egw's ``Ticker.flush_now`` when it exists).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import signal
import sys
import time
from array import array
from pathlib import Path
from typing import Any

BACKLOG = 2048  # all servers; many SSE clients connect at once
FLUSH_S = 0.025  # egw's default server.sse_flush_ms


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- measurement window ---------------------------------------------------------------------------


def _pcts(values: array, scale: float = 1000.0) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    s = sorted(values)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))] * scale, 2)

    return {
        "count": len(s),
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": round(s[-1] * scale, 2),
        "total_ms": round(sum(s) * scale, 1),
    }


class Stats:
    def __init__(self, path: str) -> None:
        self.path = path
        self.reset()
        gc.callbacks.append(self._gc)
        self._gc_start = 0.0
        self.flush_hook_installed = False

    def reset(self) -> None:
        self.t0 = time.monotonic()
        self.stalls: list[
            tuple[float, float]
        ] = []  # (seconds into the window, lag) of lags > 50 ms
        self.lag = array("d")
        self.flush = array("d")
        self.gc = {0: array("d"), 1: array("d"), 2: array("d")}

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc[info["generation"]].append(time.perf_counter() - self._gc_start)

    def timed_flush(self, fn: Any) -> Any:
        stats = self

        def wrapper(*args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                d = time.perf_counter() - t
                if d > 20e-6:  # a tick with nothing to send is not a flush
                    stats.flush.append(d)

        self.flush_hook_installed = True
        return wrapper

    async def lag_probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            lag = max(0.0, loop.time() - t - 0.01)
            self.lag.append(lag)
            if lag > 0.05 and len(self.stalls) < 1000:
                self.stalls.append(
                    (round(time.monotonic() - self.t0 - lag, 3), round(lag * 1000, 1))
                )

    def dump(self) -> None:
        out = {
            "window_s": round(time.monotonic() - self.t0, 2),
            "loop_lag": _pcts(self.lag),
            "stalls_over_50ms": sorted(self.stalls, key=lambda x: -x[1])[:10],
            "flush": _pcts(self.flush) if self.flush_hook_installed else None,
            "gc": {str(g): _pcts(v) for g, v in self.gc.items()},
        }
        tmp = self.path + ".tmp"
        Path(tmp).write_text(json.dumps(out))
        os.replace(tmp, self.path)


# --- the applications -----------------------------------------------------------------------------


def _hello_app() -> Any:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, World!")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


def _shaped_app(shape_path: str) -> Any:
    from aiohttp import web

    shape = json.loads(Path(shape_path).read_text())
    body = shape["body"].encode()
    headers = shape["headers"]
    content_type = shape.get("content_type", "application/json")

    async def task(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, headers=headers)

    app = web.Application()
    app.router.add_get("/v1/tasks/{id}", task)
    return app


def _gateway_app(config_path: str, stats: Stats | None) -> tuple[Any, float]:
    from egw.config import parse_config
    from egw.logconfig import configure_logging
    from egw.web.app import create_app

    if stats is not None:
        try:
            from egw.service import ticker as sse

            sse.Ticker.flush_now = stats.timed_flush(sse.Ticker.flush_now)  # type: ignore[method-assign]
        except (ImportError, AttributeError):
            pass  # the flush is not timed, the rest is
    cfg = parse_config(json.loads(Path(config_path).read_text()), {})
    configure_logging(level=cfg.logging.level, fmt=cfg.logging.format, file=cfg.logging.file)
    return create_app(cfg), cfg.server.keepalive_timeout_s


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def _frame(event: str, data: Any, id: int | None = None) -> bytes:
    head = f"id: {id}\n" if id is not None else ""
    return (
        f"{head}event: {event}\n"
        f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"
    ).encode()


def _fanout_app(ticker: str, stats: Stats | None) -> Any:
    """The reference fan-out: egw's SSE design with nothing else around it."""
    from aiohttp import web

    go, rate, seconds = ticker.split(",")
    streams: dict[Any, asyncio.Future[None]] = {}
    pending: list[bytes] = []
    state = {"offset": 0, "ended": False}

    def flush() -> None:
        if not pending:
            return
        payload = b"".join(pending)
        pending.clear()
        chunk = _chunk(payload)
        for transport, done in list(streams.items()):
            if transport.is_closing():
                streams.pop(transport, None)
                if not done.done():
                    done.set_result(None)
                continue
            transport.write(chunk)

    if stats is not None:
        flush = stats.timed_flush(flush)

    async def tick() -> None:
        while not state["ended"]:
            await asyncio.sleep(FLUSH_S)
            flush()

    async def pump(app: web.Application) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("_ticker_task.py")),
            go,
            rate,
            seconds,
            "150",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        while True:
            data = await proc.stdout.read(64 * 1024)
            if not data:
                break
            state["offset"] += len(data)
            pending.append(
                _frame(
                    "log",
                    {"stream": "stdout", "text": data.decode("utf-8", "replace")},
                    state["offset"],
                )
            )
        await proc.wait()
        pending.append(_frame("end", {"status": "succeeded", "exit_code": proc.returncode}))
        flush()
        state["ended"] = True
        for done in streams.values():
            if not done.done():
                done.set_result(None)

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        await resp.write(b"retry: 1000\n\n")
        transport = request.transport
        assert transport is not None
        transport.write(_chunk(_frame("status", {"status": "running"})))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        streams[transport] = done
        try:
            await done
        finally:
            streams.pop(transport, None)
        if state["ended"] and not transport.is_closing():
            await resp.write_eof()
        return resp

    async def background(app: web.Application) -> Any:
        tasks = [asyncio.create_task(pump(app)), asyncio.create_task(tick())]
        yield
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app = web.Application()
    app.router.add_get("/{tail:.*}", stream)
    app.cleanup_ctx.append(background)
    return app


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    stats = Stats(args.stats) if args.stats else None
    keepalive = 75.0
    if args.kind == "hello":
        app = _hello_app()
    elif args.kind == "shaped":
        app = _shaped_app(args.shape)
    elif args.kind == "gateway":
        app, keepalive = _gateway_app(args.config, stats)
    else:
        app = _fanout_app(args.ticker, stats)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=keepalive)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=BACKLOG, shutdown_timeout=2.0)
    await site.start()
    port = runner.addresses[0][1]
    if args.kind == "gateway":  # as egw serve does once started
        from egw.web.app import freeze_startup_heap

        freeze_startup_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    probe = None
    if stats is not None:
        loop.add_signal_handler(signal.SIGUSR1, stats.reset)
        loop.add_signal_handler(signal.SIGUSR2, stats.dump)
        probe = asyncio.create_task(stats.lag_probe())
    elif os.environ.get("EGW_BENCH_TRACEMALLOC"):
        loop.add_signal_handler(signal.SIGUSR1, _Traced(os.environ["EGW_BENCH_TRACEMALLOC"]).step)
    tmp = args.ready + ".tmp"
    Path(tmp).write_text(f"{port} {os.getpid()}")
    os.replace(tmp, args.ready)
    try:
        await stop.wait()
    finally:
        if probe is not None:
            probe.cancel()
        await runner.cleanup()


class _Traced:
    """Where the memory goes (tasks in flight bench): the first SIGUSR1 takes a tracemalloc
    snapshot, the next ones write the growth since it by source line (top 40) as JSON."""

    def __init__(self, path: str) -> None:
        import tracemalloc

        tracemalloc.start(1)
        self.path = path
        self.base: Any = None

    def step(self) -> None:
        import tracemalloc

        snap = tracemalloc.take_snapshot()
        if self.base is None:
            self.base = snap
            return
        diff = snap.compare_to(self.base, "lineno")
        rows = [
            {"where": str(d.traceback[0]), "bytes": d.size_diff, "count": d.count_diff}
            for d in sorted(diff, key=lambda d: -d.size_diff)[:40]
        ]
        total = sum(d.size_diff for d in diff)
        tmp = self.path + ".tmp"
        Path(tmp).write_text(json.dumps({"total_bytes": total, "top": rows}))
        os.replace(tmp, self.path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("hello", "shaped", "gateway", "fanout"))
    ap.add_argument("--shape", help="shaped: a JSON file with the body and headers to answer")
    ap.add_argument("--ready", required=True)
    ap.add_argument("--config")
    ap.add_argument("--ticker", help="GO_FILE,RATE,SECONDS for the fanout server's task")
    ap.add_argument("--stats")
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    _raise_nofile()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
