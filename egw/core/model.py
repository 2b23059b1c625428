"""The task as egw records it, and what a provider reports about it (pure dataclasses)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self


class TaskState(StrEnum):
    PENDING = "pending"  #: recorded by egw; not yet accepted upstream
    QUEUED = "queued"  #: accepted upstream (or waiting for a local slot), not started
    RUNNING = "running"  #: the work is running
    CANCELLING = "cancelling"  #: cancel asked for; waiting for the upstream to stop it
    #: upstream refused the cancel, or did not confirm it in time: the work may still run
    CANCEL_FAILED = "cancel_failed"
    SUCCEEDED = "succeeded"  #: ended well (exit code 0, conclusion success)
    FAILED = "failed"  #: ended badly; ``reason`` and ``exit_code`` say how
    CANCELLED = "cancelled"  #: stopped on request
    TIMED_OUT = "timed_out"  #: stopped by egw because ``timeout_s`` ran out

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[TaskState] = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT}
)

STREAMS: tuple[str, ...] = ("stdout", "stderr")


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(when: datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-27T18:55:00.123Z``."""
    if when is None:
        return None
    if when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    # "...T18:55:00.123+00:00" less its offset, which is always UTC's here
    return when.isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_task_id() -> str:
    """``t_`` and 128 random bits in hex: a task's id cannot be guessed. (`secrets` rather
    than ``uuid4().hex``: the same 32 hex digits, without building a UUID: 4% of a queued
    submit, bench "submits".)"""
    return "t_" + secrets.token_hex(16)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """What a provider saw upstream: a state, and why.

    ``detail`` is recorded with the event (raw identifiers such as an allocation
    id or a run attempt); ``at`` is the upstream's own time, when it has one.
    ``attempt`` is the task's attempt (`Task.attempt`) the report is about, when the
    provider knows it: a report about an attempt the task has left (it was resubmitted
    while the report was on its way) is recorded, never applied.
    """

    state: TaskState
    reason: str | None = None
    exit_code: int | None = None
    at: datetime | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    attempt: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stuck:
    """The watchdog's flag on a task that overstayed a state (`egw.core.watchdog`)."""

    reason: str
    since: datetime

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "since": format_time(self.since)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """The projection of a task's events: what ``GET /v1/tasks/{id}`` shows."""

    id: str
    provider: str
    spec: Mapping[str, Any]
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    status: TaskState = TaskState.PENDING
    reason: str | None = None
    exit_code: int | None = None
    upstream_id: str | None = None
    upstream_url: str | None = None
    #: provider-owned data kept with the task (namespace, run attempt, execution name...)
    upstream: Mapping[str, Any] = field(default_factory=dict)
    actor: str | None = None
    timeout_s: float | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: sequence number of the task's latest event
    index: int = 0
    #: all output has been read into the log store (set after the task ends)
    logs_complete: bool = False
    #: bytes of output in the log store (the offset the next chunk gets)
    log_size: int = 0
    #: submission order, for listing newest first without ties
    submit_seq: int = 0
    #: when the task entered its status (None: recorded before egw kept it; see updated_at)
    status_at: datetime | None = None
    #: when the task last wrote output
    output_at: datetime | None = None
    #: set by the watchdog while the task overstays its status; cleared when it moves on
    stuck: Stuck | None = None
    #: which submission upstream this is: a resubmit of a stuck task starts attempt 2...
    attempt: int = 1
    #: the namespace the task belongs to (`egw.core.access`)
    namespace: str = "default"

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "namespace": self.namespace,
            "provider": self.provider,
            "name": self.name,
            "labels": dict(self.labels),
            "status": str(self.status),
            "reason": self.reason,
            "exit_code": self.exit_code,
            "upstream": {"id": self.upstream_id, "url": self.upstream_url},
            "actor": self.actor,
            "timeout_s": self.timeout_s,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "started_at": format_time(self.started_at),
            "finished_at": format_time(self.finished_at),
            "index": self.index,
            "stuck": self.stuck.to_json() if self.stuck is not None else None,
            "attempt": self.attempt,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One row of the append-only event log."""

    seq: int
    task_id: str
    kind: str
    status: TaskState
    prev_status: TaskState | None
    reason: str | None
    exit_code: int | None
    actor: str | None
    source: str
    at: datetime
    provider: str
    data: Mapping[str, Any] = field(default_factory=dict)
    #: whether this event changed the task's status (a stale upstream report does not)
    applied: bool = True
    #: its task's namespace (kept on the event so a filtered replay needs no join)
    namespace: str = "default"

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "task_id": self.task_id,
            "namespace": self.namespace,
            "provider": self.provider,
            "kind": self.kind,
            "status": str(self.status),
            "prev_status": str(self.prev_status) if self.prev_status else None,
            "applied": self.applied,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "actor": self.actor,
            "source": self.source,
            "at": format_time(self.at),
            "data": dict(self.data),
        }
