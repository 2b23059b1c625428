"""What one committed write changed: the records the store hands to its listeners (pure).

The store's writer produces them; the fan-out (SSE, blocking queries) and the
metrics consume them, without either side knowing the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from egw.core.model import Event, Task, format_time


@dataclass(frozen=True, slots=True)
class LogChunk:
    task_id: str
    offset: int
    stream: str
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """An event of the gateway itself, of no task (a circuit breaker's move)."""

    seq: int
    kind: str
    provider: str
    target: str
    at: datetime
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "provider": self.provider,
            "target": self.target,
            "at": format_time(self.at),
            "data": dict(self.data),
        }


@dataclass(slots=True)
class Commit:
    """What one committed batch changed, handed to ``on_commit`` listeners."""

    events: list[Event] = field(default_factory=list)
    logs: list[LogChunk] = field(default_factory=list)
    logs_completed: list[str] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)
    #: committed by another replica on the same database, read back from its feed
    #: (``egw/store/postgres/feed.py``): shown to subscribers, not counted again
    replicated: bool = False
    #: its place in the feed of replicas on PostgreSQL (commit order), 0 elsewhere
    mark: int = 0
