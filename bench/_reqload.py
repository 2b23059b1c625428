"""HTTP load generator for requests with a body and per-request headers (POSTs, webhooks).

    python bench/_reqload.py --port P --connections C --duration S --spec FILE.json [--cpu N]

``FILE.json`` is a list of request templates ``{"kind": str, "head": str, "body": str}``:
``head`` is the request line and headers up to (not including) the blank line, with
``{n}`` where a number unique to each request goes (an ``X-GitHub-Delivery`` or an
``Idempotency-Key``; in ``body`` too, such as a Nomad job id); ``body`` is sent as
latin-1 bytes after ``Content-Length``. The templates are used in turn.
``--max-requests N`` stops after N requests in all.

C keep-alive connections (asyncio Protocols on raw sockets) each send the next request
as soon as the previous answer is complete, and time each one from its write to the
end of its answer. Prints one JSON line: requests, answers by status per kind,
latency percentiles (ms; p99 also by kind), seconds, this process's CPU seconds, and
the bodies of the first few non-2xx answers. Being Python, the generator may saturate its own core;
the caller reports its CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from collections import Counter
from typing import Any


class Shared:
    def __init__(self, templates: list[dict[str, str]], stop_at: float, limit: int) -> None:
        self.templates = [(t["kind"], t["head"], t["body"].encode("latin-1")) for t in templates]
        self.stop_at = stop_at
        self.limit = limit
        self.n = 0
        self.by_kind: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.latencies_by_kind: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.sent: Counter[str] = Counter()

    def next(self) -> tuple[str, bytes] | None:
        if time.monotonic() >= self.stop_at or (self.limit and self.n >= self.limit):
            return None
        kind, head, body = self.templates[self.n % len(self.templates)]
        self.n += 1
        self.sent[kind] += 1
        n = f"{os.getpid()}-{self.n}"
        head = head.replace("{n}", n)
        if b"{n}" in body:
            body = body.replace(b"{n}", n.encode())
        return kind, f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


class Conn(asyncio.Protocol):
    def __init__(self, shared: Shared, done: asyncio.Future[None]) -> None:
        self.shared = shared
        self.done = done
        self.buf = b""
        self.need = -1
        self.status = 0
        self.kind = ""
        self.t0 = 0.0
        self.body_at = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        nxt = self.shared.next()
        if nxt is None:
            self.transport.close()
            return
        self.kind, req = nxt
        self.t0 = time.perf_counter()
        self.transport.write(req)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].lower()
                self.status = int(head[9:12])
                i = head.find(b"content-length:")
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j > 0 else None]) if i >= 0 else 0
                self.need = end + 4 + length
                self.body_at = end + 4
            if len(self.buf) < self.need:
                return
            shared = self.shared
            took = time.perf_counter() - self.t0
            shared.latencies.append(took)
            shared.latencies_by_kind.setdefault(self.kind, []).append(took)
            shared.by_kind[f"{self.kind} {self.status}"] += 1
            if not 200 <= self.status < 300 and len(shared.errors) < 5:
                shared.errors.append(self.buf[self.body_at : self.need][:300].decode("latin-1"))
            self.buf = self.buf[self.need :]
            self.need = -1
            self.send()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    with open(args.spec) as f:
        templates = json.load(f)
    start = time.monotonic()
    shared = Shared(templates, start + args.duration, args.max_requests)
    dones = []
    for _ in range(args.connections):
        done: asyncio.Future[None] = loop.create_future()
        dones.append(done)
        await loop.create_connection(lambda d=done: Conn(shared, d), "127.0.0.1", args.port)
    await asyncio.wait_for(asyncio.gather(*dones), args.duration + 30)
    elapsed = time.monotonic() - start
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "requests": sum(shared.by_kind.values()),
        "sent": dict(shared.sent),
        "answers": dict(shared.by_kind),
        "seconds": elapsed,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "p50_ms": _pct(shared.latencies, 0.50),
        "p99_ms": _pct(shared.latencies, 0.99),
        "p99_ms_by_kind": {k: _pct(v, 0.99) for k, v in shared.latencies_by_kind.items()},
        "errors": shared.errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--max-requests", type=int, default=0)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
