"""The ceilings of the request parts, each a bare aiohttp process.

    python bench/_ceilings.py body|verify --ready FILE [--secret S] [--cpu N]

Served as `bench/_servers.py` serves its servers (an ``AppRunner``, a ``TCPSite``, no
access log); ``"<port> <pid>"`` goes to ``--ready``. Any ``POST`` path:

* ``body``: reads the whole body, answers ``{"ok": true}``: hello-world for requests
  that carry a body (the webhook deliveries, the submits);
* ``verify``: what a webhook receiver cannot do less than: reads the body, checks its
  ``X-Hub-Signature-256`` (HMAC-SHA256, constant-time compare), parses it with orjson
  and answers 202 naming the run (401 on a bad signature).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import signal
from pathlib import Path

import orjson
from aiohttp import web


def body_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    return app


def verify_app(secret: bytes) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, request.headers.get("X-Hub-Signature-256", "")):
            return web.json_response({"error": "bad signature"}, status=401)
        run = orjson.loads(body)["workflow_run"]
        return web.json_response({"ignored": run["id"]}, status=202)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    return app


async def serve(args: argparse.Namespace) -> None:
    app = body_app() if args.kind == "body" else verify_app(args.secret.encode())
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048, shutdown_timeout=2.0)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    Path(args.ready + ".tmp").write_text(f"{runner.addresses[0][1]} {os.getpid()}")
    os.replace(args.ready + ".tmp", args.ready)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("body", "verify"))
    ap.add_argument("--ready", required=True)
    ap.add_argument("--secret", default="")
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
