"""`egw audit`: who did what, from the event log, oldest first (``GET /v1/events``)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC
from typing import Any

from egw.cli import codes, output
from egw.cli.codes import CLIError
from egw.cli.commands import connect
from egw.cli.logview import parse_since


def _instant(text: str, flag: str) -> str:
    return parse_since(text, flag=flag).astimezone(UTC).isoformat().replace("+00:00", "Z")


async def audit_command(args: argparse.Namespace) -> int:
    """Pages of the audit query until ``--limit`` rows are printed (every page up to now
    with ``--all``); the cursor to read on from goes to stderr after ``more:``."""
    if not 1 <= args.limit <= 500:
        raise CLIError(f"--limit {args.limit}: give 1 to 500")
    if args.after < 0:
        raise CLIError(f"--after {args.after}: give a seq, 0 or more")
    params = [("type", t) for t in args.type]
    for name in ("actor", "provider", "task_id"):
        if getattr(args, name):
            params.append((name, getattr(args, name)))
    for name in ("since", "until"):
        if getattr(args, name):
            params.append((name, _instant(getattr(args, name), f"--{name}")))
    rows: list[dict[str, Any]] = []
    after, more = args.after, None
    async with connect(args) as c:
        while True:
            # a short page (a filter few events match) is followed by one for the rest
            want = args.limit if args.all else args.limit - len(rows)
            page = await c.audit([*params, ("limit", str(want)), ("after", str(after))])
            rows += page["events"]
            more = page["next_after"]
            after = more if more is not None else page["last_seq"]
            if more is None or (not args.all and len(rows) >= args.limit):
                break
    if args.json:
        output.print_json({"events": rows, "next_after": more, "last_seq": after})
        return codes.OK
    output.audit_table(rows)
    if more is not None:
        print(f"more: --after {more} (or --all)", file=sys.stderr)
    return codes.OK
