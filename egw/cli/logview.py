"""`egw logs` beyond the plain output: ``--tail N``, ``--since`` and ``--timestamps``.

egw stores a task's output as bytes at offsets, not when each piece was written, so
``--since`` answers only where that is exact: a time before the task was submitted
(all of its output) or after it ended (none). ``--timestamps`` prefixes the lines that
arrive while following (``-f``) with the time they arrived, within milliseconds of
when egw stored them; output already stored when the command started has no time and
is prefixed with ``-`` instead.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from egw.cli.codes import CLIError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: the prefix of a line whose time is not known (as wide as a time)
NO_TIME = "-".ljust(len("2026-01-01T00:00:00.000Z"))


def parse_since(text: str, now: datetime | None = None, *, flag: str = "--since") -> datetime:
    """``90s``, ``5m``, ``1h30m``, ``2d`` ago, or an ISO 8601 time (local if it has no zone)."""
    now = now or datetime.now(UTC)
    if text and _DURATION.sub("", text) == "":
        seconds = sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text))
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CLIError(
            f"{flag} {text}: give a duration (30s, 5m, 1h30m, 2d) or a time (2026-01-31T12:00:00Z)"
        ) from None
    return when if when.tzinfo else when.astimezone()


def since_keeps_all(task: dict[str, Any], since: datetime) -> bool:
    """Whether output since ``since`` is all of the task's output (True) or none of it
    (False); a time while the task ran has no exact answer, and is a `CLIError`."""
    created = datetime.fromisoformat(task["created_at"])
    if since <= created:
        return True
    finished = task.get("finished_at")
    if finished and since >= datetime.fromisoformat(finished):
        return False
    raise CLIError(
        f"--since {since.isoformat()} falls while task {task['id']} "
        f"{'ran' if finished else 'runs'}: egw does not store when each piece of output was "
        "written, so only a time before it was submitted (all) or after it ended (none) is "
        "exact; use --tail N"
    )


def last_lines(data: bytes, n: int) -> bytes:
    """The last ``n`` lines of ``data``, as tail(1) counts them."""
    if n <= 0:
        return b""
    pos = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(n):
        pos = data.rfind(b"\n", 0, pos)
        if pos < 0:
            return data
    return data[pos + 1 :]


class Stamper:
    """Puts a time at the start of each line, per stream (a chunk may end mid-line)."""

    def __init__(self) -> None:
        self._at_start = {"stdout": True, "stderr": True}

    def stamp(self, stream: str, data: bytes, when: str | None = None) -> bytes:
        prefix = (when or NO_TIME).encode() + b" "
        out = bytearray()
        for piece in re.split(b"(?<=\n)", data):
            if not piece:
                continue
            if self._at_start.get(stream, True):
                out += prefix
            out += piece
            self._at_start[stream] = piece.endswith(b"\n")
        return bytes(out)


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
