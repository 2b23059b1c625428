"""Fallback HTTP load generator, used only when ``wrk`` is not installed.

    python bench/_pyload.py --url-path /x --port P --connections C --duration S [--header 'K: V']

C keep-alive connections (asyncio Protocols on raw sockets), each sending the
next GET as soon as the previous response is complete. Prints one JSON line:
requests, non-2xx responses, seconds, and this process's CPU seconds. Being
Python, it may saturate its own core before the server does; the report says
so when its CPU use is near one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time


class Conn(asyncio.Protocol):
    def __init__(
        self, req: bytes, stats: dict[str, int], stop_at: float, done: asyncio.Future[None]
    ) -> None:
        self.req = req
        self.stats = stats
        self.stop_at = stop_at
        self.done = done
        self.buf = b""
        self.need = -1
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.req)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].lower()
                i = head.find(b"content-length:")
                length = (
                    int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
                    if i >= 0
                    else 0
                )
                if not head.startswith(b"http/1.1 2"):
                    self.stats["non2xx"] += 1
                self.need = end + 4 + length
            if len(self.buf) < self.need:
                return
            self.buf = self.buf[self.need :]
            self.need = -1
            self.stats["requests"] += 1
            if time.monotonic() >= self.stop_at:
                assert self.transport is not None
                self.transport.close()
                return
            assert self.transport is not None
            self.transport.write(self.req)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run(args: argparse.Namespace) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    headers = "".join(f"{h}\r\n" for h in args.header)
    req = f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n{headers}\r\n".encode()
    stats = {"requests": 0, "non2xx": 0}
    start = time.monotonic()
    stop_at = start + args.duration
    dones = []
    for _ in range(args.connections):
        done: asyncio.Future[None] = loop.create_future()
        dones.append(done)
        await loop.create_connection(
            lambda d=done: Conn(req, stats, stop_at, d), "127.0.0.1", args.port
        )
    await asyncio.wait_for(asyncio.gather(*dones), args.duration + 10)
    elapsed = time.monotonic() - start
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {**stats, "seconds": elapsed, "cpu_s": ru.ru_utime + ru.ru_stime}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
