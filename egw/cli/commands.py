"""The client commands: submit, rerun, status, logs, cancel, tasks.

Each runs through `client`, which turns what went wrong into one line on stderr
and an exit code of `egw.cli.codes` (a task's own code passes through).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from egw.cli import codes, output
from egw.cli.codes import CLIError
from egw.client import APIError, Client, Unreachable

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


def client(fn: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(fn(args))
        except APIError as exc:
            if args.json:
                error = {"status": exc.status, "code": exc.code, "message": exc.message}
                output.print_json({"error": {**error, "details": exc.details}})
            else:
                hint = " (set EGW_TOKEN or pass --token)" if exc.status == 401 else ""
                print(f"egw: {exc.code}: {exc.message}{hint}", file=sys.stderr)
            return codes.REFUSED if 400 <= exc.status < 500 else codes.UNREACHABLE
        except Unreachable as exc:
            print(f"egw: {exc}", file=sys.stderr)
            return codes.UNREACHABLE

    return run


def connect(args: argparse.Namespace) -> Client:
    """A client for ``--url`` with ``--token``, both checked before anything is sent."""
    where = urlsplit(args.url)
    if where.scheme not in ("http", "https") or not where.hostname:
        raise CLIError(
            f"--url {args.url}: give the gateway's URL with its scheme, "
            f"for example http://{args.url.split('://')[-1].strip('/') or '127.0.0.1:8080'}"
        )
    if not args.token:
        raise CLIError("no token: set EGW_TOKEN or pass --token (egw serve prints one)")
    try:
        return Client(args.url, args.token, cafile=args.cacert)
    except OSError as exc:
        raise CLIError(f"--cacert {args.cacert}: {exc.strerror or exc}") from None


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CLIError(f"{what} is not valid JSON: {exc}") from None


def labels(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--label {item}: write it KEY=VALUE")
        out[key] = value
    return out


def submit_body(args: argparse.Namespace) -> dict[str, Any]:
    """The submit's body from the arguments; what is wrong with them is a `CLIError`."""
    body: dict[str, Any] = {"provider": args.provider}
    if args.namespace:
        body["namespace"] = args.namespace
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if sum(bool(x) for x in (args.file, args.task, argv)) > 1:
        raise CLIError("give one of --file, --task or -- COMMAND ARGS...")
    if args.file:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"--file {args.file}: {getattr(exc, 'strerror', None) or exc}") from None
        loaded = _json_arg(text, f"--file {args.file}")
        if isinstance(loaded, dict) and "task" in loaded:
            body.update(loaded)
        else:
            body["task"] = loaded
    elif args.task:
        body["task"] = _json_arg(args.task, "--task")
    elif argv:
        body["task"] = {"command": argv[0], "args": argv[1:]}
    else:
        raise CLIError("give a command after --, or --file / --task (see egw submit --help)")
    if args.name:
        body["name"] = args.name
    if args.label:
        body["labels"] = labels(args.label)
    if args.timeout is not None:
        if not 0 < args.timeout <= 7 * 24 * 3600:
            raise CLIError(
                f"--timeout {args.timeout:g}: give seconds, more than 0 (at most 7 days)"
            )
        body["timeout_s"] = args.timeout
    return body


async def submit(args: argparse.Namespace) -> int:
    body = submit_body(args)
    async with connect(args) as c:
        task = await c.submit(body, idempotency_key=args.idempotency_key)
        return await _started(c, task, args)


async def rerun(args: argparse.Namespace) -> int:
    async with connect(args) as c:
        return await _started(c, await c.rerun(args.id), args)


async def _started(c: Client, task: dict[str, Any], args: argparse.Namespace) -> int:
    """After a submit or a rerun: print the task, or follow it to its end."""
    if not args.follow:
        if args.quiet:
            print(task["id"])
        else:
            output.print_task(task, args.json)
        return codes.OK
    print(task["id"], file=sys.stderr, flush=True)
    from egw.cli.streams import follow_logs

    try:
        return await follow_logs(c, task["id"], None, args.json, status=task["status"])
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us, then raises it
        tid = task["id"]
        if args.cancel_on_interrupt:
            try:
                await asyncio.wait_for(c.cancel(tid), 10)
                print(f"egw: interrupted; cancelling task {tid}", file=sys.stderr)
            except (APIError, Unreachable, TimeoutError) as exc:
                print(f"egw: interrupted; could not cancel task {tid}: {exc}", file=sys.stderr)
        else:
            print(
                f"egw: interrupted; task {tid} is still running "
                f"(egw cancel {tid} stops it, egw logs {tid} -f follows it again)",
                file=sys.stderr,
            )
        raise


async def status(args: argparse.Namespace) -> int:
    async with connect(args) as c:
        task = await (c.wait(args.id) if args.wait else c.task(args.id))
    output.print_task(task, args.json)
    return codes.outcome(task) if args.wait else codes.OK


async def logs(args: argparse.Namespace) -> int:
    from egw.cli import logview
    from egw.cli.streams import follow_logs, read_rest

    since = logview.parse_since(args.since) if args.since else None
    if args.tail is not None and args.tail < 0:
        raise CLIError(f"--tail {args.tail}: give a number of lines, 0 or more")
    if args.timestamps and not args.follow:
        raise CLIError(
            "--timestamps needs -f: egw does not store when each piece of output was "
            "written, so only output that arrives while following has a time"
        )
    if args.json and (args.tail is not None or since or args.timestamps):
        raise CLIError("--json prints the stream's frames: leave out --tail, --since, --timestamps")
    async with connect(args) as c:
        keep = True if since is None else logview.since_keeps_all(await c.task(args.id), since)
        plain = args.tail is None and since is None and not args.timestamps
        if args.follow and plain:
            return await follow_logs(c, args.id, args.stream, args.json)
        page = await c.logs(args.id, stream=args.stream)
        data = page.data
        if not args.follow and not page.complete and (await c.task(args.id))["status"] in TERMINAL:
            # the task has ended but not all of its output is in (Cloud Logging ingests
            # late): wait for the rest rather than print part of it as if it were all
            data += await read_rest(c, args.id, args.stream, page.offset)
        if not keep:
            data = b""
        if args.tail is not None:
            data = logview.last_lines(data, args.tail)
        stamper = logview.Stamper() if args.timestamps else None
        if stamper is not None:
            data = stamper.stamp("stdout", data)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        if args.follow:
            return await follow_logs(
                c, args.id, args.stream, args.json, offset=page.offset, stamper=stamper
            )
    return codes.OK


async def cancel(args: argparse.Namespace) -> int:
    """Exit 0 once the cancel is asked (with ``--wait``: once it is confirmed), 126 if
    upstream refused it or (``--wait``) did not confirm it in time: the task is
    ``cancel_failed``, its work may still run."""
    async with connect(args) as c:
        try:
            task = await c.cancel(args.id, force=args.force)
        except APIError as exc:
            task = await c.task(args.id) if exc.status == 409 else None
            if task is None or task["status"] != "cancel_failed":
                raise
            print(f"egw: {exc.code}: {exc.message}", file=sys.stderr)
        while args.wait and task["status"] == "cancelling":
            task = await c.task(args.id, index=task["index"], wait_s=60)
    output.print_task(task, args.json)
    if task["status"] == "cancel_failed":
        return codes.CANCEL_FAILED
    if args.wait and task["status"] != "cancelled":
        return codes.outcome(task)  # it ended otherwise before the cancel took
    return codes.OK


async def tasks(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise CLIError(f"--limit {args.limit}: give 1 to 500")
    params = [("limit", str(args.limit))]
    params += [("status", s) for s in args.status]
    params += [("label", f"{k}={v}") for k, v in labels(args.label).items()]
    if args.provider:
        params.append(("provider", args.provider))
    if args.namespace:
        params.append(("namespace", args.namespace))
    if args.stuck:
        params.append(("stuck", "true"))
    rows: list[dict[str, Any]] = []
    cursor = args.cursor
    async with connect(args) as c:
        while True:
            page = await c.tasks(params + ([("cursor", cursor)] if cursor else []))
            found = page["tasks"]
            if args.name is not None:  # the API has no name filter: filtered here
                found = [t for t in found if t["name"] == args.name]
            rows += found
            cursor = page["next_cursor"]
            if not cursor or (not args.all and len(rows) >= args.limit):
                break
    if args.json:
        output.print_json({"tasks": rows, "next_cursor": cursor})
        return codes.OK
    output.task_table(rows)
    if cursor:
        print(f"more: --cursor {cursor} (or --all)", file=sys.stderr)
    return codes.OK
