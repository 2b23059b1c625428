"""Where a Nomad log follower is in a stream's log files, and how a read from there is planned.

hashicorp/nomad client/fs_endpoint.go ``logsImpl``/``findClosest``: a read's ``offset``
counts from the lowest log file still on disk, so egw's cursor (file, offset in it) is mapped
onto it through a listing of the files (`Cursor.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

from egw.wire import nomad as wire

#: rotations between a listing and its read tolerated in a row before reading on anyway
RELANDS = 3


class Relanded(Exception):
    """The first frame of a read is not where the listing said: files rotated meanwhile."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A read's ``origin=start`` offset and where its first byte should be, per the listing."""

    offset: int
    expect: wire.LogPosition | None
    sizes: dict[int, int]
    full: int | None


@dataclass(eq=False, slots=True)
class Cursor:
    """Where one follower is in a stream's log files: the next byte to read."""

    task_id: str
    alloc_id: str
    task: str
    stream: str
    key: str
    pos: wire.LogPosition | None
    #: a byte count from the start of the output (a cursor stored by older versions)
    legacy: int | None = None
    #: the end of the file before ``pos.file``: a character cut by a rotation spans both
    prev_end: wire.LogPosition | None = None

    def at_end(self, files: dict[int, int] | None) -> bool:
        """Whether the listing shows nothing on disk past the cursor."""
        if not files or self.pos is None:
            return False
        last = max(files)
        return self.pos == wire.LogPosition(last, files[last])

    def plan(self, files: dict[int, int] | None) -> Plan:
        """Map the cursor onto an ``origin=start`` offset through the files on disk."""
        if files is None:  # no listing: read from the lowest file, skip what is stored
            return Plan(0 if self.pos else self.legacy or 0, None, {}, None)
        full = wire.full_size(files) if files else None
        if self.pos is None:
            legacy = self.legacy or 0
            if full:
                self.pos = wire.LogPosition(legacy // full, legacy % full)
            elif files and min(files) == 0:
                self.pos = wire.LogPosition(0, legacy)
            else:
                return Plan(legacy, None, files, full)
        offset = wire.start_offset(self.pos, files)
        if offset is not None:
            return Plan(offset, self.pos, files, full)
        later = [n for n in files if n > self.pos.file]
        if not later:
            return Plan(0, None, files, full)
        return Plan(0, wire.LogPosition(min(later), 0), files, full)

    def stored(self, pending: int) -> str:
        """The cursor to store when ``pending`` bytes are held back (an unfinished
        character): they are read again on resume."""
        assert self.pos is not None
        if pending <= self.pos.offset or self.prev_end is None:
            return wire.LogPosition(self.pos.file, max(0, self.pos.offset - pending)).encode()
        back = pending - self.pos.offset
        return wire.LogPosition(self.prev_end.file, self.prev_end.offset - back).encode()
