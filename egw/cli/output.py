"""How the client commands print: a task, a table of tasks, one line per event, the audit
table, and output bytes exactly as a task wrote them."""

from __future__ import annotations

import base64
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from egw.cli.logview import Stamper, now_text
from egw.client import SSEEvent

_STYLE = {  # status: (symbol, ANSI colour)
    "succeeded": ("✓", "32"),
    "failed": ("✗", "31"),
    "timed_out": ("⏱", "31"),
    "cancelled": ("⊘", "33"),
    "cancelling": ("…", "33"),
    "cancel_failed": ("!", "31"),
    "running": ("▶", "34"),
    "queued": ("…", "36"),
    "pending": ("…", "36"),
}


def colour() -> bool:
    """Colour and symbols only for a person: stdout a terminal, no NO_COLOR, not TERM=dumb."""
    return (
        sys.stdout.isatty()
        and not os.environ.get("NO_COLOR")
        and os.environ.get("TERM", "") != "dumb"
    )


def status_text(status: str, width: int = 0) -> str:
    """The status as printed: on a terminal with its symbol and colour, padded to ``width``."""
    if not colour():
        return status.ljust(width)
    symbol, code = _STYLE.get(status, ("?", "0"))
    try:  # a terminal that cannot show the symbol gets the colour alone
        symbol.encode(sys.stdout.encoding or "ascii")
        text = f"{symbol} {status}"
    except UnicodeEncodeError:
        text = status
    return f"\033[{code}m{text}\033[0m" + " " * max(0, width - len(text))


def print_json(value: Any) -> None:
    print(json.dumps(value), flush=True)


def print_task(task: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(task)
        return
    print(
        f"{task['id']}  {task.get('namespace', 'default')}  {task['provider']}  "
        f"{status_text(task['status'])}"
    )
    for key in ("reason", "exit_code"):
        if task.get(key) is not None:
            print(f"  {key}: {task[key]}")
    stuck = task.get("stuck")
    if stuck:
        print(f"  stuck: {stuck['reason']} (since {stuck['since']})")
    if (task.get("attempt") or 1) > 1:
        print(f"  attempt: {task['attempt']}")
    upstream = task.get("upstream") or {}
    if upstream.get("id"):
        print(
            f"  upstream: {upstream['id']}"
            + (f"  {upstream['url']}" if upstream.get("url") else "")
        )


def task_table(tasks: list[dict[str, Any]]) -> None:
    print(
        f"{'ID':36} {'NAMESPACE':12} {'PROVIDER':14} {'STATUS':13} {'EXIT':>4} {'DURATION':>9} "
        f"{'CREATED':24} NAME"
    )
    for t in tasks:
        code = "" if t.get("exit_code") is None else str(t["exit_code"])
        print(
            f"{t['id']:36} {t.get('namespace', 'default'):12} {t['provider']:14} "
            f"{status_text(t['status'], 13)} {code:>4} {duration(t):>9} "
            f"{t['created_at']:24} {t['name'] or ''}" + ("  [stuck]" if t.get("stuck") else "")
        )


def audit_table(events: list[dict[str, Any]]) -> None:
    """`egw audit`: one row per event, who caused it first."""
    print(f"{'SEQ':>8} {'AT':24} {'ACTOR':12} {'KIND':18} {'TASK':34} STATUS")
    for e in events:
        prev, status = e.get("prev_status"), e["status"]
        change = (
            f"{prev} -> {status_text(status)}" if prev and prev != status else status_text(status)
        )
        reason = f"  reason={e['reason']!r}" if e.get("reason") else ""
        print(
            f"{e['seq']:>8} {e['at']:24} {e.get('actor') or '-':12} {e['kind']:18} "
            f"{e['task_id']:34} {change}{reason}"
        )


def duration(task: dict[str, Any]) -> str:
    """How long it ran: start to end, or to now while it runs; empty if it never started."""
    start = _time(task.get("started_at"))
    if start is None:
        return ""
    end = _time(task.get("finished_at")) or datetime.now(UTC)
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def event_line(ev: dict[str, Any], *, with_task: bool) -> str:
    """One event as one line: when, [task,] kind, the status change, then what it says."""
    parts = [ev.get("at") or ""]
    if with_task:
        parts.append(ev.get("task_id") or "")
    parts.append(f"{ev.get('kind', ''):10}")
    prev, status = ev.get("prev_status"), ev.get("status", "")
    if not ev.get("applied", True) and ev.get("kind") == "observed":
        parts.append(f"{status} (a stale report: not applied)")
    elif prev and prev != status:
        parts.append(f"{prev} -> {status}")
    else:
        parts.append(status)
    if ev.get("exit_code") is not None:
        parts.append(f"exit_code={ev['exit_code']}")
    if ev.get("reason"):
        parts.append(f"reason={ev['reason']!r}")
    if ev.get("data"):
        parts.append(json.dumps(ev["data"], separators=(",", ":"), sort_keys=True))
    return "  ".join(parts)


def write_log_event(ev: SSEEvent, stamper: Stamper | None = None) -> None:
    """A ``log`` or ``log-b64`` frame's output, to stdout or stderr as the task wrote it
    (with ``stamper``, each line prefixed with the time it arrived)."""
    item = ev.json()
    out: TextIO = sys.stderr if item["stream"] == "stderr" else sys.stdout
    if stamper is not None:
        data = item["text"].encode() if ev.event == "log" else base64.b64decode(item["base64"])
        out.flush()
        out.buffer.write(stamper.stamp(item["stream"], data, now_text()))
        out.buffer.flush()
    elif ev.event == "log":
        out.write(item["text"])
        out.flush()
    else:  # log-b64: output that is not UTF-8
        out.flush()
        out.buffer.write(base64.b64decode(item["base64"]))
        out.buffer.flush()
