"""The audit query's terms: which events (`EventFilter`) and one page of the answer (`EventPage`).

Events are read oldest first from a ``seq`` cursor. Sequence numbers only grow, and a
page is cut at the newest event that existed when it was read, so a reader that feeds
each page's cursor into the next sees every matching event exactly once while new ones
are appended (newest first would shift every page by the events appended meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from egw.core.model import Event


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Every condition given must hold; ``kinds`` is any of them."""

    actor: str | None = None
    kinds: tuple[str, ...] = ()
    provider: str | None = None
    task_id: str | None = None
    #: ``at`` on or after this instant
    since: datetime | None = None
    #: ``at`` before this instant
    until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventPage:
    events: list[Event]
    #: read on from here at once: a full page, or the scan window ended before the log did
    next_after: int | None
    #: every event up to this seq has been looked at: the cursor to come back with later
    last_seq: int
    #: the newest seq retention has removed: events at or below it are gone
    pruned_seq: int
