"""SSE tailing clients for the fan-out benchmark, run as their own process.

    python bench/_sse_clients.py --mode sink|probe --port P --task ID --token T --n N ...

Every client sends one ``GET /v1/tasks/{id}/logs`` with
``Accept: text/event-stream`` and ``Connection: close`` on a raw socket and
reads until the gateway closes the stream (after ``event: end``).

* ``sink`` clients are minimal ``asyncio.Protocol`` objects: they count bytes
  and lines and notice the end, nothing more, so that thousands fit in one
  process on one core.
* ``probe`` clients time every line: a raw non-blocking socket on the same
  event loop (``loop.add_reader``) read with ``recvmsg`` and
  ``SO_TIMESTAMPNS``, so each read gives two receipt times: ``app`` (this
  process's ``time.time()`` right after the read) and ``kernel`` (when the
  bytes reached this socket; on loopback that is the moment the gateway's
  ``send`` returned). A line's delay is receipt minus the ``time.time()`` the
  task printed in it. ``kernel`` isolates the gateway; ``app`` also counts
  this process's own scheduling.

Talks to the parent on stdout, one line each:
``CONNECTED {json}`` once every client is live (its first ``event: status``
frame received) or has failed, then ``RESULT {json}`` when every stream ended
or ``--deadline`` (seconds since start) passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import socket
import struct
import sys
import time
from array import array
from collections import Counter

SO_TIMESTAMPNS = 35  # Linux, asm-generic (SO_TIMESTAMPNS_OLD): struct timespec of two longs
LINE = re.compile(rb"@@(\d+)@(\d+\.\d+)@@")
LINE_END = b"@@ x"  # once per printed line (the task pads every line with x...)
LIVE = b"event: status"
END = b"event: end"


def _raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(need, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    got = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if got < need:
        raise SystemExit(f"RLIMIT_NOFILE is {got}, {need} needed")
    return got


class Shared:
    def __init__(self, n: int) -> None:
        self.open = 0
        self.all_closed = asyncio.Event()
        self.n = n
        self.ok_status = 0
        self.bad_status: Counter[str] = Counter()

    def closed(self) -> None:
        self.open -= 1
        if self.open <= 0:
            self.all_closed.set()


class Sink(asyncio.Protocol):
    __slots__ = (
        "ended",
        "fut",
        "head",
        "lines",
        "live",
        "nbytes",
        "req",
        "shared",
        "tail",
        "transport",
    )

    def __init__(self, req: bytes, shared: Shared, fut: asyncio.Future[bool]) -> None:
        self.req = req
        self.shared = shared
        self.fut = fut
        self.live = False
        self.head = b""
        self.tail = b""
        self.nbytes = 0
        self.lines = 0
        self.ended = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.shared.open += 1
        transport.write(self.req)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        if not self.live:
            self.head += data
            if LIVE in self.head:
                self.live = True
                ok = self.head.startswith(b"HTTP/1.1 200")
                if not self.fut.done():
                    self.fut.set_result(ok)
                self.lines += self.head.count(LINE_END)
                self.ended = END in self.head
                self.tail = self.head[-16:]
                self.head = b""
            elif (
                len(self.head) > 65536
                or (b"\r\n\r\n" in self.head and not self.head.startswith(b"HTTP/1.1 200"))
            ) and not self.fut.done():
                self.fut.set_result(False)
            return
        buf = self.tail + data
        t = self.tail
        self.lines += buf.count(LINE_END) - t.count(LINE_END)
        if not self.ended and END in buf:
            self.ended = True
        self.tail = buf[-16:]

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.fut.done():
            self.fut.set_result(False)
        self.shared.closed()


class Probe:
    """A raw socket read with recvmsg, timing each line it receives."""

    def __init__(self, req: bytes, shared: Shared, sink_delays: tuple[array, array, array]) -> None:
        self.req = req
        self.shared = shared
        self.app_delays, self.kernel_delays, self.printed = sink_delays
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.buf = b""
        self.live = False
        self.ok = False
        self.ended = False
        self.nbytes = 0
        self.seen: set[int] = set()
        self.dupes = 0
        self.fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.kernel_ts_missing = 0

    async def start(self, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, addr)
        self.shared.open += 1
        await loop.sock_sendall(self.sock, self.req)
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(262144, socket.CMSG_SPACE(16))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, anc = b"", []
        now = time.time()
        if not data:
            self._close()
            return
        kts = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = struct.unpack("qq", cdata[:16])
                kts = sec + nsec / 1e9
        self.nbytes += len(data)
        buf = self.buf + data
        if not self.live:
            if LIVE not in buf:
                self.buf = buf
                if (
                    b"\r\n\r\n" in buf
                    and not buf.startswith(b"HTTP/1.1 200")
                    and not self.fut.done()
                ):
                    self.fut.set_result(False)
                return
            self.live = True
            self.ok = buf.startswith(b"HTTP/1.1 200")
            if not self.fut.done():
                self.fut.set_result(self.ok)
        # only whole SSE frames: a line cut between two reads is timed when it is complete
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self.buf = buf
            return
        done, self.buf = buf[: cut + 2], buf[cut + 2 :]
        if END in done:
            self.ended = True
        if kts is None:
            self.kernel_ts_missing += 1
        for m in LINE.finditer(done):
            seq = int(m.group(1))
            if seq in self.seen:
                self.dupes += 1
                continue
            self.seen.add(seq)
            ts = float(m.group(2))
            self.printed.append(ts)
            self.app_delays.append(now - ts)
            if kts is not None:
                self.kernel_delays.append(kts - ts)

    def _close(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, ValueError):
            loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if not self.fut.done():
            self.fut.set_result(False)
        self.shared.closed()

    def abort(self) -> None:
        if self.sock.fileno() >= 0:
            self._close()


def _pct(values: array, q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def _stats(values: array) -> dict[str, float | int | None]:

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "count": len(values),
        "p50_ms": ms(_pct(values, 50)),
        "p90_ms": ms(_pct(values, 90)),
        "p99_ms": ms(_pct(values, 99)),
        "max_ms": ms(max(values) if values else None),
    }


def _by_second(printed: array, delays: array) -> list[dict[str, float | int | None]]:
    """p99 and max of the delay of the lines printed in each second of the run."""
    if not printed:
        return []
    t0 = min(printed)
    buckets: dict[int, array] = {}
    for ts, d in zip(printed, delays, strict=True):
        buckets.setdefault(int(ts - t0), array("d")).append(d)
    return [
        {"second": k, "p99_ms": _stats(v)["p99_ms"], "max_ms": _stats(v)["max_ms"]}
        for k, v in sorted(buckets.items())
    ]


def _emit(tag: str, payload: dict) -> None:
    sys.stdout.write(f"{tag} {json.dumps(payload)}\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    req = (
        f"GET /v1/tasks/{args.task}/logs HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{args.port}\r\n"
        f"Authorization: Bearer {args.token}\r\n"
        "Accept: text/event-stream\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    shared = Shared(args.n)
    sem = asyncio.Semaphore(args.concurrency)
    failures: Counter[str] = Counter()
    sinks: list[Sink] = []
    probes: list[Probe] = []
    delays = (array("d"), array("d"), array("d"))
    connect_deadline = t0 + args.connect_timeout

    async def one() -> None:
        async with sem:
            left = connect_deadline - time.monotonic()
            if left <= 0:
                failures["connect deadline"] += 1
                return
            try:
                if args.mode == "sink":
                    fut: asyncio.Future[bool] = loop.create_future()
                    sink = Sink(req, shared, fut)
                    await asyncio.wait_for(
                        loop.create_connection(lambda: sink, "127.0.0.1", args.port), left
                    )
                    sinks.append(sink)
                else:
                    probe = Probe(req, shared, delays)
                    probes.append(probe)
                    await asyncio.wait_for(probe.start(("127.0.0.1", args.port)), left)
                    fut = probe.fut
                ok = await asyncio.wait_for(fut, max(0.1, connect_deadline - time.monotonic()))
                if not ok:
                    failures["not 200 or closed before live"] += 1
            except TimeoutError:
                failures["timeout"] += 1
            except OSError as exc:
                failures[type(exc).__name__ + (f" errno {exc.errno}" if exc.errno else "")] += 1

    await asyncio.gather(*(one() for _ in range(args.n)))
    live = sum(1 for s in sinks if s.live) + sum(1 for p in probes if p.live)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    _emit(
        "CONNECTED",
        {
            "live": live,
            "failures": dict(failures),
            "connect_s": round(time.monotonic() - t0, 3),
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "wall": time.monotonic(),
        },
    )
    if shared.open > 0:
        try:
            await asyncio.wait_for(
                shared.all_closed.wait(), max(0.1, t0 + args.deadline - time.monotonic())
            )
        except TimeoutError:
            pass
    still_open = shared.open
    for s in sinks:
        if s.transport is not None and not s.transport.is_closing():
            s.transport.abort()
    for p in probes:
        p.abort()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    result: dict = {
        "mode": args.mode,
        "n": args.n,
        "live": live,
        "still_open_at_deadline": still_open,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "wall": time.monotonic(),
        "maxrss_kb": ru.ru_maxrss,
    }
    if args.mode == "sink":
        lines = sorted(s.lines for s in sinks if s.live)
        result.update(
            ended=sum(1 for s in sinks if s.ended),
            bytes=sum(s.nbytes for s in sinks),
            lines_min=lines[0] if lines else 0,
            lines_median=lines[len(lines) // 2] if lines else 0,
            lines_max=lines[-1] if lines else 0,
        )
    else:
        got = sorted(len(p.seen) for p in probes if p.live)
        result.update(
            ended=sum(1 for p in probes if p.ended),
            bytes=sum(p.nbytes for p in probes),
            lines_min=got[0] if got else 0,
            lines_median=got[len(got) // 2] if got else 0,
            lines_max=got[-1] if got else 0,
            duplicates=sum(p.dupes for p in probes),
            kernel_ts_missing=sum(p.kernel_ts_missing for p in probes),
            app=_stats(delays[0]),
            kernel=_stats(delays[1]),
            app_by_second=_by_second(delays[2], delays[0]),
        )
    _emit("RESULT", result)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("sink", "probe"), required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--connect-timeout", type=float, default=60.0)
    ap.add_argument("--deadline", type=float, default=120.0)
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    _raise_nofile(args.n + 64)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
