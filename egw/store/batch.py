"""One batch of write operations, computed in memory before its single transaction.

A `Batch` is what the operations of one group commit build together: the task
projections they stage, the rows they add to each table, the event sequence
numbers they take, and the `Commit` the listeners will see. Nothing here
touches the database or the writer's cache; the writer writes a batch's rows in
one transaction and adopts its staged state and counters only once COMMIT has
succeeded (see ``egw/store/writer.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from egw.core.model import Event, Task
from egw.core.records import Commit
from egw.errors import NotFound
from egw.store.rows import event_to_row

#: the output a task keeps when no other figure is configured
DEFAULT_MAX_LOG_BYTES = 100 << 20


@dataclass(frozen=True, slots=True)
class LogCaps:
    """How many bytes of output a task keeps (see `egw.store.ops.AppendLog`): its
    provider's own figure, else ``default``."""

    default: int = DEFAULT_MAX_LOG_BYTES
    by_provider: Mapping[str, int] = field(default_factory=dict)

    def of(self, provider: str) -> int:
        return self.by_provider.get(provider, self.default)


@dataclass(slots=True)
class Batch:
    #: the writer's projection cache, read only (the preload has brought every task in)
    cache: Mapping[str, Task]
    #: the last event sequence number and submit number taken (the writer's, plus this batch's)
    seq: int
    submit_seq: int
    staged: dict[str, Task] = field(default_factory=dict)
    commit: Commit = field(default_factory=Commit)
    event_rows: list[tuple[Any, ...]] = field(default_factory=list)
    log_rows: list[tuple[Any, ...]] = field(default_factory=list)
    idem_rows: list[tuple[Any, ...]] = field(default_factory=list)
    cursor_rows: list[tuple[str, str]] = field(default_factory=list)
    gateway_rows: list[tuple[Any, ...]] = field(default_factory=list)
    #: (source, delivery id) already recorded, in the database or earlier in this batch
    deliveries: set[tuple[str, str]] = field(default_factory=set)
    #: (actor, key) -> (request hash, task id), in the database or earlier in this batch
    idem: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    prune: list[datetime] = field(default_factory=list)
    log_caps: LogCaps = field(default_factory=LogCaps)
    #: task id -> (head end, tail start): its stored output between the two is deleted
    log_trims: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: task id -> head end, once, when its output passes the cap: the chunk stored whole
    #: across the head's end (when it still fitted) is cut there
    log_heads: dict[str, int] = field(default_factory=dict)

    @property
    def writes_something(self) -> bool:
        return bool(
            self.event_rows or self.staged or self.log_rows or self.idem_rows
            or self.cursor_rows or self.gateway_rows or self.prune
        )  # fmt: skip

    def task(self, task_id: str) -> Task:
        """The newest projection of a task: staged by this batch, else cached."""
        task = self.staged.get(task_id) or self.cache.get(task_id)
        if task is None:
            raise NotFound(f"no task {task_id}", details={"task_id": task_id})
        return task

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def seen(self, source: str, delivery_id: str | None) -> bool:
        """Whether this delivery was recorded already; if not, it is from now on."""
        if delivery_id is None:
            return False
        key = (source, delivery_id)
        if key in self.deliveries:
            return True
        self.deliveries.add(key)
        return False

    def event(
        self,
        before: Task,
        after: Task,
        *,
        kind: str,
        source: str,
        applied: bool,
        actor: str | None = None,
        reason: str | None = None,
        exit_code: int | None = None,
        data: Mapping[str, Any] | None = None,
        delivery_id: str | None = None,
        now: datetime,
        seq: int,
    ) -> Event:
        """Record one event and stage the projection it leaves behind."""
        event = Event(
            seq=seq,
            task_id=after.id,
            provider=after.provider,
            kind=kind,
            status=after.status,
            prev_status=before.status if kind != "submitted" else None,
            applied=applied,
            reason=reason,
            exit_code=exit_code,
            actor=actor,
            source=source,
            at=now,
            data=data or {},
            namespace=after.namespace,
        )
        self.event_rows.append(event_to_row(event, delivery_id))
        self.commit.events.append(event)
        self.staged[after.id] = after
        return event


Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Statements:
    """One dialect's statement for each kind of row a batch writes; each takes its
    parameters in the order `row_sets` gives them."""

    events: str
    tasks: str  # an upsert
    logs: str
    cut_head: str  # (head, task, head, head): drop the bytes before a log's new head
    drop_logs: str  # (task, head, upto, upto): drop the chunks of a trimmed log's hole
    cut_log: str  # (upto, upto, task, head, upto, upto): cut the chunk the hole ends in
    idempotency: str
    cursors: str  # an upsert
    gateway_events: str


def row_sets(
    b: Batch,
    sql: Statements,
    task_row: Callable[[Task], Row],
    text: Callable[[Row], Row] | None = None,
) -> list[tuple[str, list[Row]]]:
    """Each statement ``b`` runs (``executemany``) with its rows, in the order they are
    written; ``text``, if any, rewrites the rows whose text may come from outside egw."""

    def outside(rows: list[Row]) -> list[Row]:
        return rows if text is None else [text(r) for r in rows]

    out: list[tuple[str, list[Row]]] = []
    if b.event_rows:
        out.append((sql.events, outside(b.event_rows)))
    if b.staged:
        out.append((sql.tasks, outside([task_row(t) for t in b.staged.values()])))
    if b.log_rows:
        out.append((sql.logs, b.log_rows))
    if b.log_heads:
        out.append((sql.cut_head, [(head, t, head, head) for t, head in b.log_heads.items()]))
    if b.log_trims:
        trims = b.log_trims.items()
        out.append((sql.drop_logs, [(t, head, w, w) for t, (head, w) in trims]))
        out.append((sql.cut_log, [(w, w, t, head, w, w) for t, (head, w) in trims]))
    if b.idem_rows:
        out.append((sql.idempotency, outside(b.idem_rows)))
    if b.cursor_rows:
        out.append((sql.cursors, outside(b.cursor_rows)))
    if b.gateway_rows:
        out.append((sql.gateway_events, outside(b.gateway_rows)))
    return out
