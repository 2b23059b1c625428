"""The `egw` CLI: run the gateway (serve, migrate) or use one (submit, status, logs, cancel, tasks).

Exit codes: 0 success; 1 an error, or a task that did not succeed (``status
--wait`` and ``logs -f``: failed tasks exit with their own exit code when it is
1-125, cancelled 3, timed out 124); 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from egw import __version__
from egw.config import Config, TokenConfig, load_config
from egw.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8080"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
        return result
    except ConfigError as exc:
        print(f"egw: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="egw", description="egw, an execution gateway.")
    p.add_argument("--version", action="version", version=f"egw {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="config file (default: the embedded defaults)")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.set_defaults(run=_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--config", help="config file (default: the embedded defaults)")
    migrate.set_defaults(run=_migrate)

    def client_command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument(
            "--url", default=os.environ.get("EGW_URL", DEFAULT_URL), help="gateway URL ($EGW_URL)"
        )
        c.add_argument(
            "--token", default=os.environ.get("EGW_TOKEN"), help="bearer token ($EGW_TOKEN)"
        )
        c.add_argument(
            "--cacert", default=os.environ.get("EGW_CACERT"), help="CA file for HTTPS ($EGW_CACERT)"
        )
        c.add_argument("--json", action="store_true", help="print JSON for scripts")
        return c

    s = client_command("submit", "submit a task")
    s.add_argument("--provider", default="local", help="local, nomad, github_actions, cloud_run")
    s.add_argument("--file", help="a JSON file: the whole body, or just its task object")
    s.add_argument("--task", help="the task object as JSON")
    s.add_argument("--name")
    s.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--timeout", type=float, metavar="SECONDS")
    s.add_argument("--idempotency-key")
    s.add_argument("--follow", "-f", action="store_true", help="then follow its logs to the end")
    s.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND ARGS... (local runner)")
    s.set_defaults(run=_client(_submit))

    st = client_command("status", "show a task")
    st.add_argument("id")
    st.add_argument("--wait", action="store_true", help="wait until it ends; exit with its outcome")
    st.set_defaults(run=_client(_status))

    lg = client_command("logs", "print a task's output")
    lg.add_argument("id")
    lg.add_argument(
        "-f", "--follow", action="store_true", help="follow to the end; exit with its outcome"
    )
    lg.add_argument("--stream", choices=["stdout", "stderr"])
    lg.set_defaults(run=_client(_logs))

    cn = client_command("cancel", "cancel a task")
    cn.add_argument("id")
    cn.add_argument("--force", action="store_true")
    cn.set_defaults(run=_client(_cancel))

    ts = client_command("tasks", "list tasks, newest first")
    ts.add_argument("--status")
    ts.add_argument("--provider")
    ts.add_argument("--limit", type=int, default=20)
    ts.set_defaults(run=_client(_tasks))

    from egw.devserver import add_dev_parser

    add_dev_parser(sub)
    return p


# --- serve and migrate -------------------------------------------------------------------------


def _load(path: str | None) -> Config:
    return load_config(path)


def _serve(args: argparse.Namespace) -> int:
    from egw.logconfig import configure_logging
    from egw.web.app import serve

    cfg = _load(args.config)
    server = replace(
        cfg.server, host=args.host or cfg.server.host, port=args.port or cfg.server.port
    )
    cfg = replace(cfg, server=server)
    if not any(t.configured for t in cfg.auth.tokens):
        if not _is_loopback(server.host):
            raise ConfigError(
                "auth.tokens",
                f"no token is configured: refusing to listen on {server.host}, which is not "
                "loopback (set EGW_TOKEN or configure auth.tokens)",
            )
        token = secrets.token_urlsafe(32)
        generated = TokenConfig(
            name="generated", token=token, scopes=["tasks:read", "tasks:write", "admin"]
        )
        cfg = replace(cfg, auth=replace(cfg.auth, tokens=[generated]))
        print(
            f"egw: no token configured; this run's token is: {token}", file=sys.stderr, flush=True
        )
    configure_logging(level=cfg.logging.level, fmt=cfg.logging.format, file=cfg.logging.file)

    def listening(url: str) -> None:
        print(f"egw: listening on {url}", file=sys.stderr, flush=True)

    return _one_line(lambda: serve(cfg, listening=listening), f"{server.host}:{server.port}")


def _one_line(run: Any, address: str) -> int:
    """Run `serve` or `migrate`; what stops them before they work is one line and exit
    code 1 (a `ConfigError` goes up to `main`: exit code 2)."""
    from egw.errors import EgwError

    try:
        run()
    except ConfigError:
        raise
    except EgwError as exc:
        print(f"egw: {exc.message}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:  # the port (EADDRINUSE, EACCES), a TLS file...
        where = exc.filename or address
        print(f"egw: {where}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _migrate(args: argparse.Namespace) -> int:
    from egw.store.db import open_and_migrate

    cfg = _load(args.config)

    def migrate() -> None:
        applied = asyncio.run(open_and_migrate(cfg.storage.path))
        done = f"applied {', '.join(applied)}" if applied else "up to date"
        print(f"{cfg.storage.path}: {done}")

    return _one_line(migrate, cfg.storage.path)


# --- client commands ---------------------------------------------------------------------------


def _client(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from egw.client import APIError

        try:
            result: int = asyncio.run(fn(args))
            return result
        except APIError as exc:
            if args.json:
                print(
                    json.dumps(
                        {
                            "error": {
                                "status": exc.status,
                                "code": exc.code,
                                "message": exc.message,
                                "details": exc.details,
                            }
                        }
                    )
                )
            else:
                print(f"egw: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"egw: cannot reach {args.url}: {exc}", file=sys.stderr)
            return 1

    return run


def _connect(args: argparse.Namespace) -> Any:
    from egw.client import Client

    return Client(args.url, args.token, cafile=args.cacert)


def _submit_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"provider": args.provider}
    if args.file:
        loaded = json.loads(Path(args.file).read_text(encoding="utf-8"))
        if isinstance(loaded, dict) and "task" in loaded:
            body.update(loaded)
        else:
            body["task"] = loaded
    elif args.task:
        body["task"] = json.loads(args.task)
    else:
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise ConfigError("", "give a command after --, or --file / --task")
        body["task"] = {"command": argv[0], "args": argv[1:]}
    if args.name:
        body["name"] = args.name
    if args.label:
        body["labels"] = dict(item.partition("=")[::2] for item in args.label)
    if args.timeout:
        body["timeout_s"] = args.timeout
    return body


async def _submit(args: argparse.Namespace) -> int:
    async with _connect(args) as client:
        task = await client.submit(_submit_body(args), idempotency_key=args.idempotency_key)
        if not args.follow:
            _print_task(task, args.json)
            return 0
        print(task["id"], file=sys.stderr)
        return await _follow(client, task["id"], None, args.json)


async def _status(args: argparse.Namespace) -> int:
    async with _connect(args) as client:
        task = await (client.wait(args.id) if args.wait else client.task(args.id))
    _print_task(task, args.json)
    return outcome(task) if args.wait else 0


async def _logs(args: argparse.Namespace) -> int:
    async with _connect(args) as client:
        if args.follow:
            return await _follow(client, args.id, args.stream, args.json)
        sys.stdout.buffer.write(await client.logs(args.id, stream=args.stream))
    return 0


async def _follow(client: Any, task_id: str, stream: str | None, as_json: bool) -> int:
    last: dict[str, Any] | None = None
    async for ev in client.follow(task_id, stream=stream):
        if as_json:
            print(json.dumps({"event": ev.event, "id": ev.id, "data": ev.json()}), flush=True)
        elif ev.event == "log":
            item = ev.json()
            out = sys.stderr if item["stream"] == "stderr" else sys.stdout
            out.write(item["text"])
            out.flush()
        elif ev.event == "log-b64":  # output that is not UTF-8, as the task wrote it
            item = ev.json()
            out = sys.stderr if item["stream"] == "stderr" else sys.stdout
            out.flush()
            out.buffer.write(base64.b64decode(item["base64"]))
            out.buffer.flush()
        if ev.event == "end":
            last = ev.json()["task"]
    if last is None:
        return 1
    if not as_json and last["status"] != "succeeded":
        print(
            f"egw: task {last['status']}" + (f": {last['reason']}" if last.get("reason") else ""),
            file=sys.stderr,
        )
    return outcome(last)


async def _cancel(args: argparse.Namespace) -> int:
    async with _connect(args) as client:
        _print_task(await client.cancel(args.id, force=args.force), args.json)
    return 0


async def _tasks(args: argparse.Namespace) -> int:
    async with _connect(args) as client:
        page = await client.tasks(status=args.status, provider=args.provider, limit=str(args.limit))
    if args.json:
        print(json.dumps(page))
        return 0
    print(f"{'ID':36} {'PROVIDER':15} {'STATUS':11} {'CREATED':24} NAME")
    for t in page["tasks"]:
        print(
            f"{t['id']:36} {t['provider']:15} {t['status']:11} {t['created_at']:24} "
            f"{t['name'] or ''}"
        )
    return 0


def _print_task(task: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(task))
        return
    print(f"{task['id']}  {task['provider']}  {task['status']}")
    for key in ("reason", "exit_code"):
        if task.get(key) is not None:
            print(f"  {key}: {task[key]}")
    upstream = task.get("upstream") or {}
    if upstream.get("id"):
        print(
            f"  upstream: {upstream['id']}"
            + (f"  {upstream['url']}" if upstream.get("url") else "")
        )


def outcome(task: dict[str, Any]) -> int:
    """The exit code that tells a script how the task ended."""
    status = task["status"]
    if status == "succeeded":
        return 0
    if status == "timed_out":
        return 124
    if status == "cancelled":
        return 3
    code = task.get("exit_code")
    return code if isinstance(code, int) and 1 <= code <= 125 else 1
