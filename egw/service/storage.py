"""What the gateway may put on disk, and how it tells: the output each task keeps, the
watermark past which new tasks are refused, and the state of the store for ``/readyz``.

Disk use has two bounds. Each task keeps at most ``max_log_bytes`` of output (its head
and its tail: see `egw.store.ops.AppendLog`); and while the database's data (its pages
in use, ``Writer.used_bytes``) is larger than ``storage.max_bytes``, new tasks are
refused with 503 ``storage_full`` and a ``Retry-After``, before the disk is full, while
the tasks already accepted run to their end. Retention frees pages, which later writes
reuse, so submits are accepted again after a prune; the file itself does not shrink
(SQLite keeps its free pages; ``VACUUM`` gives them back). So a disk sized for
``max_bytes``, plus ``max_log_bytes`` for each task that may run at once, plus the
write-ahead log, is never filled by egw.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from egw.config import Config
from egw.errors import StorageFull
from egw.store.batch import LogCaps


@dataclass(frozen=True, slots=True)
class StorageLimits:
    log_caps: LogCaps = field(default_factory=LogCaps)
    #: the watermark of the database files' size, in bytes (None: none)
    max_bytes: int | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> StorageLimits:
        p = cfg.providers
        own = {
            "local": p.local.max_log_bytes,
            "nomad": p.nomad.max_log_bytes,
            "github_actions": p.github_actions.max_log_bytes,
            "cloud_run": p.cloud_run.max_log_bytes,
        }
        caps = LogCaps(
            default=cfg.storage.max_log_bytes,
            by_provider={name: n for name, n in own.items() if n is not None},
        )
        return cls(log_caps=caps, max_bytes=cfg.storage.max_bytes)


def database_bytes(path: str) -> int:
    """The size of the database's files on disk: the file and its write-ahead log."""
    if path == ":memory:":
        return 0
    total = 0
    for name in (path, f"{path}-wal"):
        try:
            total += os.stat(name).st_size
        except OSError:
            pass
    return total


def check_room(used_bytes: int, limits: StorageLimits) -> None:
    """`StorageFull` if the database's data is past the watermark."""
    if limits.max_bytes is not None and used_bytes > limits.max_bytes:
        raise StorageFull(
            "the gateway's storage is full: no new task is accepted until old ones are pruned",
            details={"used_bytes": used_bytes, "max_bytes": limits.max_bytes},
        )


def status(
    path: str,
    limits: StorageLimits,
    failure: str | None,
    used_bytes: int,
    refusals: int,
    *,
    store: str = "sqlite",
) -> Mapping[str, Any]:
    """The store as ``/readyz`` and the metrics report it: which database (``store``:
    sqlite or postgresql; not where: ``/readyz`` needs no token and shows no path or
    address, the start-up log has it, without a password). On PostgreSQL the size on
    disk is that of egw's tables (``used_bytes``): the server's files are not egw's."""
    return {
        "store": store,
        "writable": failure is None,
        "error": failure,
        "size_bytes": database_bytes(path) if store == "sqlite" else used_bytes,
        "used_bytes": used_bytes,
        "max_bytes": limits.max_bytes,
        "full": limits.max_bytes is not None and used_bytes > limits.max_bytes,
        "refusals": refusals,
    }


__all__ = ["StorageFull", "StorageLimits", "check_room", "status"]
