"""What one committed write changed: the records the store hands to its listeners (pure).

The store's writer produces them; the fan-out (SSE, blocking queries) and the
metrics consume them, without either side knowing the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from egw.core.model import Event, Task


@dataclass(frozen=True, slots=True)
class LogChunk:
    task_id: str
    offset: int
    stream: str
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


@dataclass(slots=True)
class Commit:
    """What one committed batch changed, handed to ``on_commit`` listeners."""

    events: list[Event] = field(default_factory=list)
    logs: list[LogChunk] = field(default_factory=list)
    logs_completed: list[str] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)
