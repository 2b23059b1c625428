"""Nomad's event stream, pure: NDJSON with ``{}`` heartbeats, cut and parsed (event-stream.md)."""

# Malformed upstream data raises ValueError, whatever is wrong with it (callers catch one type).

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamEvent:
    topic: str
    type: str
    key: str
    namespace: str
    index: int
    payload: Mapping[str, Any]

    @property
    def object(self) -> Mapping[str, Any]:
        """The payload's one object (``{"Allocation": {...}}`` -> the allocation)."""
        value = self.payload.get(self.topic)
        return value if isinstance(value, Mapping) else {}

    @property
    def job_id(self) -> str | None:
        obj = self.object
        if self.topic == "Job":
            return str(obj.get("ID") or self.key) or None
        value = obj.get("JobID")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class StreamLine:
    """One NDJSON message: a heartbeat (``{}``, index None) or a batch of one raft index."""

    index: int | None
    events: tuple[StreamEvent, ...] = ()

    @property
    def heartbeat(self) -> bool:
        return self.index is None


def parse_stream_line(raw: bytes | str) -> StreamLine:
    """Parse one line of ``/v1/event/stream``; raises ValueError if it is not Nomad's shape."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("an event-stream line must be a JSON object")
    if not data:
        return StreamLine(None)
    index = data.get("Index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError("an event-stream line without an integer Index")
    events: list[StreamEvent] = []
    for ev in data.get("Events") or []:
        if not isinstance(ev, dict):
            raise ValueError("an event must be a JSON object")
        events.append(
            StreamEvent(
                topic=str(ev.get("Topic", "")),
                type=str(ev.get("Type", "")),
                key=str(ev.get("Key", "")),
                namespace=str(ev.get("Namespace") or ""),
                index=int(ev.get("Index") or index),
                payload=payload if isinstance(payload := ev.get("Payload"), dict) else {},
            )
        )
    return StreamLine(index, tuple(events))


class NdjsonSplitter:
    """Cuts a byte stream into lines at ``\\n``; a line may arrive in any number of pieces."""

    def __init__(self, max_line: int = 64 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while (end := self._buf.find(b"\n", start)) >= 0:
            line = bytes(self._buf[start:end]).strip()
            if line:
                lines.append(line)
            start = end + 1
        del self._buf[:start]
        if len(self._buf) > self._max:
            raise ValueError(f"an event-stream line is longer than {self._max} bytes")
        return lines
