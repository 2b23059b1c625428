"""The write operations: one record per kind of change, each applying itself to a `Batch`.

An operation is queued by one of the `Writer`'s typed methods and resolved
with the result type it declares (``Op[R]``). ``apply`` computes the change in
memory (stages projections, adds rows) and may raise an `EgwError`, which fails
that operation alone; ``preload`` names the rows the writer must read before
the batch is applied (tasks the cache lacks, delivery ids, idempotency keys).
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from egw.core import states
from egw.core.model import Observation, Task, TaskState, format_time, utcnow
from egw.core.records import LogChunk
from egw.errors import Conflict
from egw.store.batch import Batch

R = TypeVar("R")

#: (actor, Idempotency-Key, hash of the request body)
Idempotency = tuple[str, str, str]


@dataclass(slots=True)
class Preload:
    """What a batch must read from the database before it is applied."""

    tasks: set[str] = field(default_factory=set)
    #: (source, delivery id)
    deliveries: set[tuple[str, str]] = field(default_factory=set)
    #: (actor, Idempotency-Key)
    idem_keys: set[tuple[str, str]] = field(default_factory=set)


@dataclass(eq=False)
class Op(ABC, Generic[R]):
    #: resolved with the result of ``apply`` once the batch has committed
    fut: asyncio.Future[R] = field(init=False, repr=False)
    #: kept by the writer, and tried again, while the store cannot take writes
    #: (rather than failed after the retries): see ``Writer.settle``
    kept: bool = field(init=False, default=False, repr=False)

    @abstractmethod
    def apply(self, b: Batch) -> R: ...

    def preload(self, want: Preload) -> None:
        """Name what ``apply`` needs read first (by default nothing)."""


@dataclass(eq=False)
class TaskOp(Op[R]):
    task_id: str

    def preload(self, want: Preload) -> None:
        want.tasks.add(self.task_id)


@dataclass(eq=False)
class CreateTask(Op[tuple[Task, bool]]):
    """Record a new task; with an idempotency key seen before, the task recorded then.

    With ``answer``, the provider's answer to its submit, given before anything was
    recorded because it needed no upstream call (`egw.providers.base.Queueing`), is
    applied in the same operation: a queued submit is one commit, not two (bench part
    "submits"). A replayed key applies no answer: the task has its own already."""

    task: Task
    idempotency: Idempotency | None = None
    answer: Accept | None = None

    def preload(self, want: Preload) -> None:
        if self.idempotency is not None:
            want.idem_keys.add(self.idempotency[:2])

    def apply(self, b: Batch) -> tuple[Task, bool]:
        now = utcnow()
        if self.idempotency is not None:
            actor, key, request_hash = self.idempotency
            prior = b.idem.get((actor, key))
            if prior is not None:
                if prior[0] != request_hash:
                    raise Conflict(
                        "this Idempotency-Key was used with a different request body",
                        details={"idempotency_key": key, "task_id": prior[1]},
                    )
                return b.task(prior[1]), False
            b.idem[(actor, key)] = (request_hash, self.task.id)
            b.idem_rows.append((actor, key, request_hash, self.task.id, format_time(now)))
        b.submit_seq += 1
        seq = b.next_seq()
        task = self.task.evolve(index=seq, submit_seq=b.submit_seq, updated_at=now, status_at=now)
        b.event(
            task, task, kind="submitted", source="api", applied=True, actor=task.actor,
            data={"name": task.name, "labels": dict(task.labels)}, now=now, seq=seq,
        )  # fmt: skip
        if self.answer is not None:
            return self.answer.apply(b), True
        return task, True


@dataclass(eq=False)
class Observe(TaskOp[Task]):
    """Record what a provider saw upstream; applied if the state machine allows it."""

    obs: Observation
    source: str
    delivery_id: str | None = None

    def preload(self, want: Preload) -> None:
        want.tasks.add(self.task_id)
        if self.delivery_id is not None:
            want.deliveries.add((self.source, self.delivery_id))

    def apply(self, b: Batch) -> Task:
        now = utcnow()
        task = b.task(self.task_id)
        if b.seen(self.source, self.delivery_id):
            return task
        seq = b.next_seq()
        moved = states.observe(task, self.obs, seq=seq, now=now)
        after = moved if moved is not None else task.evolve(index=seq)
        data: dict[str, Any] = {"observed": str(self.obs.state)}
        if self.obs.detail:
            data["detail"] = dict(self.obs.detail)
        if self.obs.at is not None:
            data["upstream_at"] = format_time(self.obs.at)
        if self.obs.attempt is not None:
            data["attempt"] = self.obs.attempt
        b.event(
            task, after, kind="observed", source=self.source, applied=moved is not None,
            reason=self.obs.reason, exit_code=self.obs.exit_code, data=data,
            delivery_id=self.delivery_id, now=now, seq=seq,
        )  # fmt: skip
        return after


@dataclass(eq=False)
class Command(TaskOp[tuple[Task, bool]]):
    """A cancel (by a client) or a timeout (by the gateway); (task, whether it changed)."""

    kind: Literal["cancel", "timeout"]
    actor: str | None
    data: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, b: Batch) -> tuple[Task, bool]:
        now = utcnow()
        task = b.task(self.task_id)
        seq = b.seq + 1
        if self.kind == "cancel":
            moved = states.cancel(task, seq=seq, now=now)
            kind = "cancel_requested"
        else:
            moved = states.time_out(task, seq=seq, now=now, timeout_s=float(task.timeout_s or 0))
            kind = "timed_out"
        # a force cancel of a task already cancelling leaves its status, but is recorded (not
        # applied): it is the command the replica running a local task's process acts on
        # (egw/service/replicas.py), and the log says who forced the cancel
        forced = bool(self.data.get("force")) and task.status is TaskState.CANCELLING
        if moved is None and not forced:
            return task, False
        after = moved if moved is not None else task.evolve(index=seq)
        b.next_seq()
        b.event(
            task, after, kind=kind, source="gateway" if self.actor is None else "api",
            applied=moved is not None, actor=self.actor, reason=after.reason if moved else None,
            data=self.data, now=now, seq=seq,
        )  # fmt: skip
        return after, moved is not None


@dataclass(eq=False)
class Progress(TaskOp[bool]):
    """An event that changes no state; False if its delivery was recorded already."""

    kind: str
    data: Mapping[str, Any]
    source: str
    delivery_id: str | None = None

    def preload(self, want: Preload) -> None:
        want.tasks.add(self.task_id)
        if self.delivery_id is not None:
            want.deliveries.add((self.source, self.delivery_id))

    def apply(self, b: Batch) -> bool:
        task = b.task(self.task_id)
        if b.seen(self.source, self.delivery_id):
            return False
        seq = b.next_seq()
        b.event(
            task, task.evolve(index=seq), kind=self.kind, source=self.source, applied=False,
            data=self.data, delivery_id=self.delivery_id, now=utcnow(), seq=seq,
        )  # fmt: skip
        return True


@dataclass(eq=False)
class SetUpstream(TaskOp[Task]):
    """Record the upstream's id, URL and data for a task (None keeps what is there)."""

    upstream_id: str | None
    upstream_url: str | None
    data: Mapping[str, Any] | None

    def apply(self, b: Batch) -> Task:
        now = utcnow()
        task = b.task(self.task_id)
        seq = b.next_seq()
        after = task.evolve(
            upstream_id=self.upstream_id if self.upstream_id is not None else task.upstream_id,
            upstream_url=self.upstream_url if self.upstream_url is not None else task.upstream_url,
            upstream={**task.upstream, **(self.data or {})},
            index=seq,
            updated_at=now,
        )
        changed = {"upstream_id": after.upstream_id, "upstream_url": after.upstream_url}
        b.event(
            task, after, kind="upstream", source=task.provider, applied=False, data=changed,
            now=now, seq=seq,
        )  # fmt: skip
        return after


@dataclass(eq=False)
class Accept(TaskOp[Task]):
    """The provider's answer to a submit: its upstream id, URL and data, and what it saw
    (``obs``, None: nothing), as one operation: on its own after the upstream answered
    (a submit is then two writer round trips, the task and its acceptance, not three),
    or within the task's `CreateTask` when the answer needed no upstream call (one)."""

    upstream_id: str | None
    upstream_url: str | None
    data: Mapping[str, Any] | None
    obs: Observation | None
    source: str

    def apply(self, b: Batch) -> Task:
        if self.upstream_id is None and self.upstream_url is None and self.obs is not None:
            # the answer names nothing upstream (the local runner queueing the task): its
            # data joins the task, and the observation is its event; an ``upstream`` event
            # would say nothing (one event row less a queued submit: bench part "submits")
            task = b.task(self.task_id)
            b.staged[task.id] = task.evolve(upstream={**task.upstream, **(self.data or {})})
            return Observe(self.task_id, self.obs, self.source).apply(b)
        after = SetUpstream(self.task_id, self.upstream_id, self.upstream_url, self.data).apply(b)
        if self.obs is not None:
            after = Observe(self.task_id, self.obs, self.source).apply(b)
        return after


@dataclass(eq=False)
class AppendLog(TaskOp[int]):
    """Append output to a task's log; the log's new size (every byte counts, kept or not).

    A task keeps at most ``max_log_bytes`` of output (`LogCaps`, by provider): its
    first half (the head) and its last half (the tail). Offsets never change: a byte
    keeps the offset it was written at, and ``log_size`` counts every byte the task
    wrote. Once the output passes the cap, the bytes between the head and the tail
    window are dropped: the part of a new chunk that falls there is never stored, and
    stored chunks that fall out of the tail window are deleted (or cut) in the same
    transaction (``Batch.log_trims``, applied by `egw.store.statements.write`), and when
    the output first passes the cap, the chunk stored across the head's end is cut there
    (``Batch.log_heads``). So the
    stored log is exactly ``[0, head)`` and ``[log_size - tail, log_size)``, with one
    hole between them that moves forward as output comes.

    Readers are never shown a byte twice or out of order: they read by offset, in
    order, and a position that falls in the hole simply continues at the next stored
    byte (`egw.service.reads.tail`); a live tailer sees every byte that was stored,
    also one later deleted from the tail window. The first append that passes the cap
    records one ``log_truncated`` event (its data: ``max_log_bytes``, ``head_bytes``,
    ``tail_bytes``, ``dropped_from``); from then on the task has dropped
    ``log_size - max_log_bytes`` bytes, exactly.
    """

    stream: str
    data: bytes

    def apply(self, b: Batch) -> int:
        task = b.task(self.task_id)
        if not self.data:
            return task.log_size
        start = task.log_size
        end = start + len(self.data)
        cap = b.log_caps.of(task.provider)
        # output is news: the watchdog's silence deadline counts from it, and it ends a
        # running task's "stuck" flag (egw/core/watchdog.py)
        now = utcnow()
        stuck = None if task.status is TaskState.RUNNING else task.stuck
        after = task.evolve(log_size=end, output_at=now, stuck=stuck)
        if task.stuck is not None and stuck is None:  # an event, so that watchers see it
            seq = b.next_seq()
            after = after.evolve(index=seq)
            b.event(
                task, after, kind="stuck_cleared", source="gateway", applied=False,
                data={"cleared_by": "output"}, now=now, seq=seq,
            )  # fmt: skip
        if end <= cap:
            self._keep(b, start, self.data)
            b.staged[task.id] = after
            return end
        head = cap // 2
        window = end - (cap - head)  # where the tail window starts now (> head)
        if start < head:
            self._keep(b, start, self.data[: head - start])
        cut = max(start, window)
        self._keep(b, cut, self.data[cut - start :])
        b.log_trims[task.id] = (head, window)
        if start > cap:  # recorded when the output first passed the cap
            b.staged[task.id] = after
            return end
        b.log_heads[task.id] = head
        seq = b.next_seq()
        data = {
            "max_log_bytes": cap, "head_bytes": head, "tail_bytes": cap - head,
            "dropped_from": head,
        }  # fmt: skip
        b.event(
            task, after.evolve(index=seq), kind="log_truncated", source="gateway",
            applied=False, data=data, now=utcnow(), seq=seq,
        )  # fmt: skip
        return end

    def _keep(self, b: Batch, offset: int, data: bytes) -> None:
        chunk = LogChunk(self.task_id, offset, self.stream, bytes(data))
        b.log_rows.append((chunk.task_id, chunk.offset, chunk.stream, chunk.data))
        b.commit.logs.append(chunk)


@dataclass(eq=False)
class Output(TaskOp[int]):
    """Output and what its provider must remember past it, as one operation, so in one
    commit: a log reader's lines and its cursor after them (Nomad, Cloud Run), a job's log
    and the note that it is in (GitHub's ``upstream.logged_jobs``, merged into the task's
    upstream data without an event). A gateway killed around it leaves both or neither:
    the next reader (after a restart, or the next holder of the provider's lease) neither
    loses nor repeats a line. The log's new size, as `AppendLog`."""

    chunks: tuple[tuple[str, bytes], ...]
    cursor: tuple[str, str] | None = None
    upstream: Mapping[str, Any] | None = None

    def apply(self, b: Batch) -> int:
        size = b.task(self.task_id).log_size
        for stream, data in self.chunks:
            size = AppendLog(self.task_id, stream, data).apply(b)
        if self.cursor is not None:
            b.cursor_rows.append(self.cursor)
        if self.upstream:
            task = b.task(self.task_id)
            b.staged[task.id] = task.evolve(upstream={**task.upstream, **self.upstream})
        return size


@dataclass(eq=False)
class LogsComplete(TaskOp[None]):
    """Mark a task's log as complete: no more output will come."""

    def apply(self, b: Batch) -> None:
        task = b.task(self.task_id)
        if not task.logs_complete:
            b.staged[task.id] = task.evolve(logs_complete=True)
            b.commit.logs_completed.append(task.id)


@dataclass(eq=False)
class Settle(TaskOp[Task]):
    """A task's last word: an observation that ends it (if any), and the end of its output.

    The writer keeps a ``Settle`` it could not commit (the disk is full, the database
    refuses writes) and tries it again, before anything else, until the store takes it
    (see ``Writer.settle``): so a task whose output or outcome could not be stored
    still ends, with its reason, once the store works again.
    """

    obs: Observation | None
    source: str

    def apply(self, b: Batch) -> Task:
        if self.obs is not None:
            Observe(self.task_id, self.obs, self.source).apply(b)
        LogsComplete(self.task_id).apply(b)
        return b.task(self.task_id)


@dataclass(eq=False)
class Load(TaskOp[Task]):
    """Bring a task into the projection cache; writes nothing (see ``Writer.warm``)."""

    def apply(self, b: Batch) -> Task:
        return b.task(self.task_id)  # the preload brought it in


@dataclass(eq=False)
class SetCursor(Op[None]):
    """Remember a provider's position in an upstream stream."""

    key: str
    value: str

    def apply(self, b: Batch) -> None:
        b.cursor_rows.append((self.key, self.value))


@dataclass(eq=False)
class RecordGatewayEvent(Op[None]):
    """Append an event of the gateway itself (no task: see ``0003_circuit.sql``)."""

    kind: str
    provider: str
    target: str
    data: Mapping[str, Any]

    def apply(self, b: Batch) -> None:
        row = (self.kind, self.provider, self.target, format_time(utcnow()), json.dumps(self.data))
        b.gateway_rows.append(row)


@dataclass(eq=False)
class Prune(Op[None]):
    """Delete finished tasks (events, logs, keys) that finished before a time."""

    before: datetime

    def apply(self, b: Batch) -> None:
        b.prune.append(self.before)


def retention_cutoff(retention_days: float, now: datetime | None = None) -> datetime:
    """The time before which finished tasks are pruned."""
    return (now or utcnow()) - timedelta(days=retention_days)
