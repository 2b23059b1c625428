r"""Nomad's event stream, pure: NDJSON with ``{}`` heartbeats, cut and parsed (event-stream.md).

A busy cluster's stream is mostly other people's jobs. `peek_stream_line` answers, from the
line's bytes and without decoding it, whether any of its events can name one of egw's jobs;
only then is the line decoded. The scan is exact, not a guess (tests/wire/test_nomad_filter.py
checks it with generated lines): an event's job is a JSON string (``JobID``; for the Job topic
``ID``, else ``Key``), and a job id egw accepts is made of ``[A-Za-z0-9._-]``, which JSON
writes as themselves, so the id appears in the line as ``"JobID":"<id>"`` (or ``"ID"``,
``"Key"``) unless a ``\u`` escape spells one of those characters, in which case the line is
decoded. The batch's ``Index`` is read from its head, ``{"Index":N,`` (nomad/structs/event.go
``Events``: Index first, then Events, as Go's encoder writes a struct's fields in order); a
line that does not start so is decoded too.
"""

# Malformed upstream data raises ValueError, whatever is wrong with it (callers catch one type).
# A foreign line that `peek_stream_line` skips is not checked: it concerns no job of egw's.

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

import orjson


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
            value = obj.get("ID")
            return (value if isinstance(value, str) else "") or self.key or None
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
    data = orjson.loads(raw)
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
                key=key if isinstance(key := ev.get("Key"), str) else "",
                namespace=str(ev.get("Namespace") or ""),
                index=int(ev.get("Index") or index),
                payload=payload if isinstance(payload := ev.get("Payload"), dict) else {},
            )
        )
    return StreamLine(index, tuple(events))


#: a batch's head (nomad/structs/event.go ``Events``)
_HEAD = re.compile(rb'\{\s*"Index"\s*:\s*(\d+)\s*[,}]')
#: the string fields that can name an event's job (see `StreamEvent.job_id`)
_NAMES = re.compile(rb'"(?:JobID|ID|Key)"\s*:\s*"([^"\\]*)"')
#: a ``\u`` escape of a character in ``[-.0-9A-Za-z_]`` (or of a letter of a field name)
_SPELLED = re.compile(rb"\\u00(?:2[dDeE]|[3-7][0-9a-fA-F])")


def peek_stream_line(raw: bytes, jobs: Container[bytes]) -> StreamLine:
    """`parse_stream_line`, except that a batch none of whose events can belong to a job id in
    ``jobs`` (UTF-8 bytes of ids in ``[A-Za-z0-9._-]``) comes back with its index and no
    events, undecoded. Never drops an event whose ``job_id`` is in ``jobs``."""
    head = _HEAD.match(raw)
    if head is None or _SPELLED.search(raw) is not None:
        return parse_stream_line(raw)
    for name in _NAMES.findall(raw):
        if name in jobs:
            return parse_stream_line(raw)
    return StreamLine(int(head.group(1)))


class NdjsonSplitter:
    """Cuts a byte stream into lines at ``\\n``; a line may arrive in any number of pieces."""

    def __init__(self, max_line: int = 64 * 1024 * 1024) -> None:
        #: the pieces of an unfinished line (joined once its end comes: linear in its size)
        self._rest: list[bytes] = []
        self._size = 0
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            self._rest.append(data)
            self._size += len(data)
            if self._size > self._max:
                raise ValueError(f"an event-stream line is longer than {self._max} bytes")
            return []
        if self._rest:
            data = b"".join(self._rest) + data
            self._rest.clear()
        *lines, rest = data.split(b"\n")
        if rest:
            self._rest.append(rest)
        self._size = len(rest)
        if self._size > self._max or any(len(line) > self._max for line in lines):
            raise ValueError(f"an event-stream line is longer than {self._max} bytes")
        return [stripped for line in lines if (stripped := line.strip())]
