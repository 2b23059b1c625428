"""``egw circuits``: each provider's circuit breakers, one row per upstream target (from
``/readyz``), and with ``--events`` every move they made (``GET /v1/gateway/events``)."""

from __future__ import annotations

import argparse
from typing import Any

from egw.cli import codes, output
from egw.cli.commands import connect


async def circuits(args: argparse.Namespace) -> int:
    async with connect(args) as c:
        report = await c.readiness()
        moves: list[dict[str, Any]] = []
        if args.events:
            after = 0
            while True:
                page = await c.gateway_events(after=after)
                moves.extend(page["events"])
                if not page["events"]:
                    break
                after = page["next_after"]
    breakers = {
        name: entry["circuit"]
        for name, entry in report.get("providers", {}).items()
        if isinstance(entry, dict) and "circuit" in entry
    }
    if args.json:
        output.print_json({"circuits": breakers, **({"events": moves} if args.events else {})})
        return codes.OK
    rows = [
        [name, target, t["state"], str(t["failures"]), _wait(t), t.get("last_error") or "-"]
        for name, circuit in sorted(breakers.items())
        for target, t in sorted(circuit["targets"].items())
    ]
    if not breakers:
        print("no enabled provider calls an upstream (the local runner has no breaker)")
    elif not rows:
        print("no upstream called yet: every breaker is closed")
    else:
        _table(["PROVIDER", "TARGET", "STATE", "FAILURES", "RETRY IN", "LAST ERROR"], rows)
    for e in moves:
        data = e["data"]
        held = f", open {data['open_s']:g}s" if data.get("open_s") else ""
        why = f"{data.get('from')} -> {e['kind'].removeprefix('circuit_')}"
        count = f"{data['failures']} failures{held}"
        print(f"{e['at']}  {e['provider']} {e['target']}: {why} ({count})")
    return codes.OK


def _wait(target: dict[str, Any]) -> str:
    return f"{target['retry_after_s']:.0f}s" if target["state"] != "closed" else "-"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
