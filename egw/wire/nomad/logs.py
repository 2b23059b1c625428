"""Nomad's log stream, pure: undelimited JSON frames with base64 ``Data``, decoded into
frames (client-fs-logs.md)."""

# Malformed upstream data raises ValueError, whatever is wrong with it (callers catch one type).

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass


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
