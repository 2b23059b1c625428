"""The watchdog's write operations: a failed cancel, a stuck flag, a resubmit (see ops.py).

Each applies a rule of `egw.core.states` and records one event; each is a no-op
(returns the task unchanged, ``changed`` False) when the task moved on meanwhile,
so a verdict computed from an older projection never overrides a newer one: the
watchdog's verdicts name the ``basis`` they were computed from (`basis`), a
newer cancel, status or output in between makes them void.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from egw.core import states
from egw.core.model import Stuck, Task, TaskState, utcnow
from egw.store.batch import Batch
from egw.store.ops import TaskOp

#: what a verdict of the watchdog was computed from: the task's status, when it entered
#: it, and its last output
Basis = tuple[TaskState, datetime | None, datetime | None]


def basis(task: Task) -> Basis:
    """(status, status_at, output_at) to the millisecond: as stored, so that a projection
    read back from SQLite and one from the writer's cache compare equal."""
    return (task.status, _ms(task.status_at), _ms(task.output_at))


def _ms(when: datetime | None) -> datetime | None:
    return None if when is None else when.replace(microsecond=when.microsecond // 1000 * 1000)


@dataclass(eq=False)
class CancelFailed(TaskOp[tuple[Task, bool]]):
    """A ``cancelling`` task whose cancel upstream refused or never confirmed."""

    reason: str
    source: str
    data: Mapping[str, Any] = field(default_factory=dict)
    #: the watchdog's deadline verdict: only if the task is still as it was then
    basis: Basis | None = None

    def apply(self, b: Batch) -> tuple[Task, bool]:
        now = utcnow()
        task = b.task(self.task_id)
        if self.basis is not None and basis(task)[:2] != self.basis[:2]:
            return task, False  # a newer cancel has its own deadline
        moved = states.cancel_failed(task, seq=b.seq + 1, now=now, reason=self.reason)
        if moved is None:
            return task, False
        b.event(
            task, moved, kind="cancel_failed", source=self.source, applied=True,
            reason=self.reason, data=self.data, now=now, seq=b.next_seq(),
        )  # fmt: skip
        return moved, True


@dataclass(eq=False)
class FlagStuck(TaskOp[tuple[Task, bool]]):
    """Flag a task that overstayed its status; the status does not change."""

    stuck: Stuck
    basis: Basis
    data: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, b: Batch) -> tuple[Task, bool]:
        now = utcnow()
        task = b.task(self.task_id)
        if basis(task) != self.basis:
            return task, False  # it moved on, or wrote output, since the verdict
        flagged = states.flag_stuck(task, seq=b.seq + 1, now=now, stuck=self.stuck)
        if flagged is None:
            return task, False
        data = {**self.stuck.to_json(), **self.data}
        b.event(
            task, flagged, kind="stuck", source="gateway", applied=False,
            reason=self.stuck.reason, data=data, now=now, seq=b.next_seq(),
        )  # fmt: skip
        return flagged, True


@dataclass(eq=False)
class Resubmit(TaskOp[tuple[Task, bool]]):
    """Make a stuck task attempt ``attempt``: back to ``pending`` with no upstream, in
    one write with its ``resubmitted`` event (which keeps what the previous attempt had
    upstream). Applied once per attempt number, so it is never done twice."""

    attempt: int

    def apply(self, b: Batch) -> tuple[Task, bool]:
        now = utcnow()
        task = b.task(self.task_id)
        moved = states.resubmit(task, seq=b.seq + 1, now=now, attempt=self.attempt)
        if moved is None:
            return task, False
        previous = {
            "upstream_id": task.upstream_id,
            "upstream_url": task.upstream_url,
            "upstream": dict(task.upstream),
            "status": str(task.status),
            "stuck": task.stuck.to_json() if task.stuck is not None else None,
        }
        b.event(
            task, moved, kind="resubmitted", source="gateway", applied=True,
            reason=moved.reason, data={"attempt": self.attempt, "previous": previous},
            now=now, seq=b.next_seq(),
        )  # fmt: skip
        return moved, True
