"""A task's log files as Nomad's log collector keeps them, and where a read lands in them.

hashicorp/nomad client/logmon/logging/rotator.go (``FileRotator``): a stream is written to
``alloc/logs/<task>.<stdout|stderr>.<n>``; once a file holds ``MaxFileSizeMB`` MiB the
writer moves on to ``n+1`` (each full file is exactly that size), and only the newest
``MaxFiles`` files are kept: older ones are deleted. The defaults are the task's
``LogConfig`` defaults (nomad/structs ``DefaultLogConfig``: 10 files of 10 MiB).

hashicorp/nomad client/fs_endpoint.go (``logsImpl``, ``findClosest``): a read with
``origin=start&offset=N`` walks the files *still on disk* from the lowest one, so once
``.0`` is deleted the same N lands further into the output; ``origin=end`` walks back from
the newest. A reader keeps reading a file it has open after it is deleted (an open file
descriptor), and at its end is told ``"file deleted"`` (a frame with ``FileEvent``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024
DEFAULT_MAX_FILES = 10
DEFAULT_MAX_FILE_SIZE_MB = 10
#: client/fs_endpoint.go ``deleteEvent`` and ``truncateEvent``
DELETE_EVENT = "file deleted"
TRUNCATE_EVENT = "file truncated"


@dataclass
class TaskLog:
    """One task stream's log files: index -> contents, only those still on disk."""

    task: str
    kind: str
    max_files: int = DEFAULT_MAX_FILES
    file_size: int = DEFAULT_MAX_FILE_SIZE_MB * MIB
    files: dict[int, bytearray] = field(default_factory=dict)

    @classmethod
    def for_task(cls, task: dict[str, Any], kind: str) -> TaskLog:
        config = task.get("LogConfig") or {}
        log = cls(
            task=str(task.get("Name") or ""),
            kind=kind,
            max_files=max(1, int(config.get("MaxFiles") or DEFAULT_MAX_FILES)),
            file_size=max(1, int(config.get("MaxFileSizeMB") or DEFAULT_MAX_FILE_SIZE_MB)) * MIB,
        )
        log.files[0] = bytearray()
        return log

    def name(self, index: int) -> str:
        return f"{self.task}.{self.kind}.{index}"

    def path(self, index: int) -> str:
        return f"alloc/logs/{self.name(index)}"

    @property
    def current(self) -> int:
        return max(self.files)

    def write(self, data: bytes) -> None:
        """``FileRotator.Write``: fill the current file up to the size, then the next."""
        view = memoryview(data)
        while view:
            index = self.current
            buf = self.files[index]
            if len(buf) >= self.file_size:
                index += 1
                buf = self.files[index] = bytearray()
                self._purge()
            room = self.file_size - len(buf)
            buf += view[:room]
            view = view[room:]

    def _purge(self) -> None:
        """``FileRotator.purgeOldFiles``: keep the newest ``max_files``."""
        for index in sorted(self.files)[: -self.max_files]:
            del self.files[index]

    def total(self) -> int:
        """Bytes on disk (what ``origin=start`` offsets count over)."""
        return sum(len(b) for b in self.files.values())

    def closest(self, desired_index: int | None, offset: int) -> tuple[int, int]:
        """``findClosest``: the file (the first on disk at or after ``desired_index``; None:
        the newest) and the offset in it that ``offset`` (negative: from the end) lands on."""
        indexes = sorted(self.files)
        if desired_index is None:
            i = len(indexes) - 1
        else:
            i = next((n for n, idx in enumerate(indexes) if idx >= desired_index), len(indexes) - 1)
        while True:
            size = len(self.files[indexes[i]])
            if offset == 0:
                break
            if offset < 0:
                if size + offset >= 0:
                    offset = size + offset
                    break
                if i == 0:
                    offset = 0
                    break
                offset, i = size + offset, i - 1
                continue
            if offset <= size:
                break
            if i == len(indexes) - 1:
                offset = size
                break
            offset, i = offset - size, i + 1
        return indexes[i], offset
