"""The ceilings of the request parts, each a bare aiohttp process.

    python bench/_ceilings.py body|verify|record --ready FILE [--secret S] [--db F] [--cpu N]

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
import contextlib
import hashlib
import hmac
import os
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
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


class GroupCommit:
    """One transaction for every submit queued while the previous one committed (egw's
    schema and statements, imported here only: the other ceilings need nothing of egw)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[tuple[str, dict[str, Any], asyncio.Future[None]]]
        self.queue = asyncio.Queue()
        self.seq = 0

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self.commit(batch)
            except Exception as exc:  # noqa: BLE001 - each waiting request answers 500
                await self.conn.execute("ROLLBACK")
                for _, _, fut in batch:
                    fut.set_exception(exc)
            else:
                for _, _, fut in batch:
                    fut.set_result(None)

    async def commit(self, batch: list[tuple[str, dict[str, Any], asyncio.Future[None]]]) -> None:
        from egw.store.rows import EVENT_FIELDS, TASK_FIELDS
        from egw.store.statements import (
            INSERT_EVENTS,
            INSERT_IDEMPOTENCY,
            SELECT_IDEMPOTENCY,
            UPSERT_TASKS,
        )

        keys = [b[0] for b in batch]
        # one call to aiosqlite's thread per statement, as egw's writer did before its
        # batches went to a thread of its own in one call each (bench/README.md, part 5)
        sql = f"{SELECT_IDEMPOTENCY} ({', '.join('?' * len(keys))})"
        known = {row[0] for row in await self.conn.execute_fetchall(sql, ["bench", *keys])}
        events, tasks, keys = [], [], []
        for key, task, _ in batch:
            if key in known:  # a replay: nothing to record (the bench sends none)
                continue
            self.seq += 1
            task |= {"submit_seq": self.seq, "idx": self.seq}
            tasks.append(tuple(task[f] for f in TASK_FIELDS))
            event = dict.fromkeys(EVENT_FIELDS)
            event |= {"seq": self.seq, "task_id": task["id"], "provider": task["provider"]}
            event |= {"kind": "submitted", "status": "pending", "applied": 1, "source": "api"}
            event |= {"at": task["created_at"], "data": '{"name":null,"labels":{}}'}
            event["namespace"] = "default"
            events.append(tuple(event.values()))
            keys.append(("bench", key, "hash", task["id"], task["created_at"]))
        await self.conn.execute("BEGIN IMMEDIATE")
        await self.conn.executemany(INSERT_EVENTS, events)
        await self.conn.executemany(UPSERT_TASKS, tasks)
        await self.conn.executemany(INSERT_IDEMPOTENCY, keys)
        await self.conn.execute("COMMIT")


def record_app(db: str) -> web.Application:
    store: dict[str, GroupCommit] = {}

    from egw.store.db import connect, open_writer
    from egw.store.migrate import apply_migrations
    from egw.store.rows import TASK_FIELDS

    async def handler(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        task = dict.fromkeys(TASK_FIELDS)
        task |= {"id": "t_" + uuid.uuid4().hex, "provider": body["provider"], "labels": "{}"}
        task |= {"spec": orjson.dumps(body["task"]).decode(), "status": "pending"}
        task |= {"upstream": "{}", "created_at": now, "updated_at": now, "status_at": now}
        task |= {"logs_complete": 0, "log_size": 0, "attempt": 1, "namespace": "default"}
        fut = asyncio.get_running_loop().create_future()
        store["writer"].queue.put_nowait((request.headers["Idempotency-Key"], task, fut))
        await fut
        return web.json_response({"id": task["id"], "status": "pending"}, status=202)

    async def writer(app: web.Application) -> Any:
        with contextlib.closing(open_writer(db)) as migrating:
            apply_migrations(migrating)
        conn = await connect(db)
        store["writer"] = GroupCommit(conn)
        loop = asyncio.create_task(store["writer"].run())
        yield
        loop.cancel()
        await conn.close()

    app = web.Application()
    app.cleanup_ctx.append(writer)
    app.router.add_post("/{tail:.*}", handler)
    return app


async def serve(args: argparse.Namespace) -> None:
    if args.kind == "record":
        app = record_app(args.db)
    else:
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
    ap.add_argument("kind", choices=("body", "verify", "record"))
    ap.add_argument("--ready", required=True)
    ap.add_argument("--secret", default="")
    ap.add_argument("--db", default="record.db")
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
