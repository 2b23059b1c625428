"""One process per database: an exclusive `flock` on ``<database>.lock``, held for life.

Two gateways on one SQLite file would each believe they own every unfinished task:
the second one's provider start-up kills the first one's processes, marks its tasks
failed, and the two writers then race for the same event sequence numbers. So the
process that opens a database first takes an exclusive, non-blocking ``flock`` on a
sidecar file next to it and keeps it until it exits; anyone else is refused at once,
with the pid the holder wrote into the file.

Why these choices:

- ``flock``, not ``fcntl``/``lockf`` record locks: a record lock is dropped when *any*
  descriptor of the file is closed anywhere in the process, and one process holds one
  of them, however many times it asks. A ``flock`` belongs to the open file
  description, and the kernel drops it when the holder dies, even by SIGKILL: there is
  never a stale lock to clean up. (The lock file itself stays; it is never deleted,
  because deleting it would let a waiting process lock an unlinked inode.)
- The descriptor is opened ``O_CLOEXEC``, so the commands the local runner starts do
  not inherit it, and cannot keep the database locked after the gateway has died.
- A sidecar file, not the database: SQLite takes its own locks on the database file,
  and closing any descriptor of it would drop theirs.
- Within one process the lock is counted, so that the serve loop (which locks before
  it binds the port) and the `Database` it opens (which locks before it connects) can
  both hold it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from egw.errors import StoreError

__all__ = ["DatabaseLock", "lock_path"]


def lock_path(database: str) -> Path:
    """The lock file of the database at ``database``."""
    return Path(database + ".lock")


@dataclass(slots=True)
class _Held:
    fd: int
    count: int


_held: dict[str, _Held] = {}


class DatabaseLock:
    """The exclusive lock of one database file. `acquire` raises `StoreError` (one line,
    naming the holder's pid and the lock file) if another process has it."""

    def __init__(self, database: str) -> None:
        self.database = database
        # ":memory:" is private to its connection: nothing to share, nothing to lock
        self.path = None if database == ":memory:" else lock_path(database)
        self._key = "" if self.path is None else os.path.realpath(self.path)
        self._mine = False

    def acquire(self) -> None:
        if self.path is None or self._mine:
            return
        held = _held.get(self._key)
        if held is not None:
            held.count += 1
            self._mine = True
            return
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                who = f"pid {holder}" if holder else "another process"
                raise StoreError(
                    f"{self.database} is in use by another egw ({who}; lock file {self.path}): "
                    "one gateway per database"
                ) from exc
            raise StoreError(
                f"{self.database}: cannot lock {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is a courtesy to whoever is refused; the lock is what counts
        _held[self._key] = _Held(fd, 1)
        self._mine = True

    def release(self) -> None:
        if not self._mine:
            return
        self._mine = False
        held = _held[self._key]
        held.count -= 1
        if held.count:
            return
        del _held[self._key]
        try:
            os.ftruncate(held.fd, 0)  # no stale pid for the next reader
        except OSError:
            pass
        os.close(held.fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> DatabaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _open(self) -> int:
        assert self.path is not None
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise StoreError(f"{self.database}: {parent} is not a directory") from exc
        except OSError as exc:
            raise StoreError(
                f"{self.database}: cannot create the directory {exc.filename or parent}: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(
                f"{self.database}: cannot open its lock file {self.path}: {exc.strerror or exc}"
            ) from exc


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
