"""The streaming commands: a task's output followed to its end, a task's events
(`egw events`) and every task's events (`egw watch`), one line per change."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

from egw.cli import codes, output
from egw.cli.commands import TERMINAL, connect
from egw.cli.logview import Stamper
from egw.cli.spinner import Spinner
from egw.client import Client


async def follow_logs(
    c: Client,
    task_id: str,
    stream: str | None,
    as_json: bool,
    *,
    offset: int | None = None,
    stamper: Stamper | None = None,
    status: str | None = None,
) -> int:
    """Print the task's output as it comes (after byte ``offset``), then exit with its
    outcome. While the task waits to run (``status``, then its status events), a spinner
    shows on stderr when it is a terminal."""
    last: dict[str, Any] | None = None
    spinner = Spinner()
    if status is not None and not as_json:
        spinner.status(status)
    try:
        async for ev in c.follow(task_id, stream=stream, offset=offset):
            if as_json:
                output.print_json({"event": ev.event, "id": ev.id, "data": ev.json()})
            elif ev.event in ("log", "log-b64"):
                spinner.stop()
                output.write_log_event(ev, stamper)
            elif ev.event == "status":
                spinner.status(str(ev.json().get("status")))
            if ev.event == "end":
                last = ev.json()["task"]
    finally:
        spinner.stop()
    if last is None:
        print("egw: the log stream ended without the task's end", file=sys.stderr)
        return codes.UNREACHABLE
    if not as_json and last["status"] != "succeeded":
        reason = f": {last['reason']}" if last.get("reason") else ""
        print(f"egw: task {last['status']}{reason}", file=sys.stderr)
    return codes.outcome(last)


async def read_rest(c: Client, task_id: str, stream: str | None, offset: int) -> bytes:
    """The output after ``offset`` of a task that has ended, once all of it is in."""
    rest = bytearray()
    async for ev in c.follow(task_id, stream=stream, offset=offset):
        if ev.event == "log":
            rest += ev.json()["text"].encode()
        elif ev.event == "log-b64":
            rest += base64.b64decode(ev.json()["base64"])
    return bytes(rest)


async def events(args: argparse.Namespace) -> int:
    """A task's events; with ``-f``, and the task not ended yet, until it ends."""
    async with connect(args) as c:
        task = await c.task(args.id)
        if not args.follow or task["status"] in TERMINAL:
            after = 0
            while True:
                page = await c.events(args.id, after=after)
                for ev in page["events"]:
                    _print_event(ev, args.json, with_task=False)
                if not page["events"]:
                    return codes.OK
                after = page["last_seq"]
        async for frame in c.stream(f"/v1/tasks/{args.id}/events", {"after": "0"}):
            if frame.event == "reset":
                print(f"egw: {frame.json()['message']}", file=sys.stderr)
                continue
            ev = frame.json()
            _print_event(ev, args.json, with_task=False)
            if ev.get("applied") and ev.get("status") in TERMINAL:
                return codes.OK
    return codes.OK


async def watch(args: argparse.Namespace) -> int:
    """Every event from now on, or after ``--after`` (filtered by ``--provider``,
    ``--task``), until Ctrl-C."""
    params = {k: v for k, v in (("provider", args.provider), ("task_id", args.task_id)) if v}
    if args.after is not None:
        params["after"] = str(args.after)
    async with connect(args) as c:
        async for frame in c.stream("/v1/events", params):
            if frame.event == "reset":
                print(f"egw: {frame.json()['message']}", file=sys.stderr)
            else:
                _print_event(frame.json(), args.json, with_task=True)
    return codes.OK


def _print_event(ev: dict[str, Any], as_json: bool, *, with_task: bool) -> None:
    if as_json:
        output.print_json(ev)
    else:
        print(output.event_line(ev, with_task=with_task), flush=True)
