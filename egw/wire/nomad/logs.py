"""Nomad's log stream, pure: undelimited JSON frames with base64 ``Data``, decoded into
frames (client-fs-logs.md)."""

# Malformed upstream data raises ValueError, whatever is wrong with it (callers catch one type).

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LogFrame:
    """One frame of ``/v1/client/fs/logs``; ``{}`` (a heartbeat) has no data and no file event."""

    offset: int | None = None
    data: bytes = b""
    file: str | None = None
    file_event: str | None = None

    @property
    def heartbeat(self) -> bool:
        return not self.data and self.file_event is None


def parse_frame(raw: bytes | str) -> LogFrame:
    obj = json.loads(raw)
    if not isinstance(obj, dict):
        raise ValueError("a log frame must be a JSON object")
    data = b""
    if obj.get("Data"):
        try:
            data = base64.b64decode(obj["Data"], validate=True)
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"a log frame's Data is not base64: {exc}") from None
    offset = obj.get("Offset")
    return LogFrame(
        offset=offset if isinstance(offset, int) else None,
        data=data,
        file=obj.get("File") if isinstance(obj.get("File"), str) else None,
        file_event=obj.get("FileEvent") if isinstance(obj.get("FileEvent"), str) else None,
    )


class FrameDecoder:
    """Splits the framed log stream, JSON objects written back to back with no delimiter,
    as bytes arrive in any pieces.

    A brace counter that knows JSON strings finds each object's end; bytes of multi-byte
    UTF-8 characters never equal ``{ } " \\``, so scanning bytes is safe.
    """

    def __init__(self, max_frame: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._max = max_frame

    def feed(self, data: bytes) -> list[LogFrame]:
        self._buf += data
        frames: list[LogFrame] = []
        buf = self._buf
        start = 0
        i = self._pos
        while i < len(buf):
            c = buf[i]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == 0x5C:  # backslash
                    self._escape = True
                elif c == 0x22:  # quote
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c == 0x7B:  # {
                if self._depth == 0:
                    start = i
                self._depth += 1
            elif c == 0x7D:  # }
                self._depth -= 1
                if self._depth < 0:
                    raise ValueError("unbalanced '}' in the log stream")
                if self._depth == 0:
                    frames.append(parse_frame(bytes(buf[start : i + 1])))
                    start = i + 1
            elif self._depth == 0 and c not in b" \t\r\n":
                raise ValueError(f"unexpected byte {c:#x} between log frames")
            i += 1
        if self._depth == 0:
            del buf[:i]
            self._pos = 0
        else:
            del buf[:start]
            self._pos = i - start
        if len(buf) > self._max:
            raise ValueError(f"a log frame is longer than {self._max} bytes")
        return frames


# Where a byte is in a task's rotated log files. hashicorp/nomad client/fs_endpoint.go
# (``logsImpl``, ``streamFile``): a frame's ``File`` is ``alloc/logs/<task>.<stream>.<n>`` and
# its ``Offset`` the end of its ``Data`` within that file; ``origin=start&offset=N`` counts N
# from the lowest file still on disk (``findClosest``). client/logmon/logging/rotator.go
# fills each file to exactly ``MaxFileSizeMB`` MiB before moving on to ``n+1``.


@dataclass(frozen=True, slots=True, order=True)
class LogPosition:
    """A byte in the log files: file index ``n`` and offset within that file."""

    file: int
    offset: int

    def encode(self) -> str:
        return f"{self.file}:{self.offset}"


def file_index(path: str | None) -> int | None:
    """The ``n`` of ``alloc/logs/<task>.<stream>.<n>``; None if the name is not of that shape."""
    head, _, tail = (path or "").rpartition(".")
    return int(tail) if head and tail.isdigit() else None


def parse_cursor(value: str | None) -> LogPosition | int | None:
    """A stored log cursor: ``"<file>:<offset>"``, or (stored by older versions) a plain byte
    count from the start of the output; None when there is none or it is unreadable."""
    if not value:
        return None
    if value.isdigit():
        return int(value)
    file, sep, offset = value.partition(":")
    if sep and file.isdigit() and offset.isdigit():
        return LogPosition(int(file), int(offset))
    return None


def disk_files(listing: Any, task: str, stream: str) -> dict[int, int]:
    """From ``/v1/client/fs/ls/:alloc?path=alloc/logs``: the stream's files on disk, index to
    size."""
    files: dict[int, int] = {}
    prefix = f"{task}.{stream}."
    for entry in listing if isinstance(listing, list) else []:
        if not isinstance(entry, dict) or entry.get("IsDir"):
            continue
        name, size = entry.get("Name"), entry.get("Size")
        if not isinstance(name, str) or not name.startswith(prefix) or not isinstance(size, int):
            continue
        index = file_index(name)
        if index is not None and name == f"{prefix}{index}":
            files[index] = size
    return files


def full_size(files: Mapping[int, int]) -> int | None:
    """The rotation size, when the listing shows it: every file but the newest is full."""
    older = [size for index, size in files.items() if index != max(files)]
    return max(older) if older else None


def start_offset(pos: LogPosition, files: Mapping[int, int]) -> int | None:
    """The ``origin=start`` offset that lands on ``pos`` (counted from the lowest file on
    disk); None when ``pos``'s file is no longer on disk."""
    if pos.file not in files:
        return None
    return sum(size for index, size in files.items() if index < pos.file) + pos.offset


def bytes_between(
    a: LogPosition, b: LogPosition, sizes: Mapping[int, int], full: int | None
) -> int | None:
    """How many bytes lie from ``a`` to ``b`` (``b`` later); files not in ``sizes`` are
    rotated ones of ``full`` bytes; None when a size is not known."""
    if b.file == a.file:
        return b.offset - a.offset
    total = -a.offset + b.offset
    for index in range(a.file, b.file):
        size = sizes.get(index, full)
        if size is None:
            return None
        total += size
    return total
