"""The watchdog's deadlines, pure: when a task's cancel counts as failed, when it is stuck.

Theory of operation
-------------------
Every deadline is computed from what the task record stores, never from a timer
someone had to remember: ``status_at`` (when the task entered its status; a task
recorded before egw kept it falls back to ``updated_at``, or ``created_at`` while
``pending``) and ``output_at`` (its last output). So a gateway that restarts finds
the same deadlines, and one that was down past a deadline acts on it at once.

A task has at most one deadline at a time, the one of its status:

* ``cancelling`` with a ``cancel_timeout_s``: past it, the cancel failed
  (``cancel_failed``): upstream did not confirm it.
* ``pending`` / ``queued`` with ``pending_timeout_s`` / ``queued_timeout_s``,
  and ``running`` with ``silent_timeout_s`` (no output since the later of its
  start and its last output): past it, the task is *stuck*. A task already
  flagged has no deadline until it moves on (the move clears the flag).

`next_due` says when and what; the service keeps one heap of these for the
whole gateway (``egw/service/watchdog.py``) and asks `next_due` again when an
entry comes up, since the task may have moved on meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from egw.core.model import TERMINAL, Task, TaskState

S = TaskState


class OnStuck(StrEnum):
    FLAG = "flag"  #: flag the task and tell the streams; nothing else
    CANCEL = "cancel"  #: and cancel it
    RESUBMIT = "resubmit"  #: and stop its upstream work and submit it again (a new attempt)


class Verdict(StrEnum):
    CANCEL_FAILED = "cancel_failed"
    STUCK = "stuck"


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """One provider's watchdog settings (None: no such deadline)."""

    cancel_timeout_s: float | None = None
    pending_timeout_s: float | None = None
    queued_timeout_s: float | None = None
    silent_timeout_s: float | None = None
    on_stuck: OnStuck = OnStuck.FLAG
    #: attempts in all, the first submission included, before ``resubmit`` only flags
    max_attempts: int = 1

    @property
    def watches(self) -> bool:
        return any(
            t is not None
            for t in (
                self.cancel_timeout_s,
                self.pending_timeout_s,
                self.queued_timeout_s,
                self.silent_timeout_s,
            )
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Due:
    at: datetime
    verdict: Verdict
    reason: str
    #: the time the reason counts from (the flag's ``since``)
    since: datetime


def entered(task: Task) -> datetime:
    """When the task entered its status, as well as the record tells."""
    if task.status_at is not None:
        return task.status_at
    return task.created_at if task.status is S.PENDING else task.updated_at


def next_due(task: Task, policy: Policy) -> Due | None:
    """The task's next deadline, or None if it has none (ended, flagged, not watched)."""
    if task.status in TERMINAL:
        return None
    since = entered(task)
    if task.status is S.CANCELLING:
        limit = policy.cancel_timeout_s
        if limit is None:
            return None
        return Due(
            at=since + timedelta(seconds=limit),
            verdict=Verdict.CANCEL_FAILED,
            reason=f"upstream did not confirm the cancel within {limit:g}s",
            since=since,
        )
    if task.stuck is not None:
        return None
    if task.status is S.PENDING:
        limit, what = policy.pending_timeout_s, "pending (not accepted upstream)"
    elif task.status is S.QUEUED:
        limit, what = policy.queued_timeout_s, "queued upstream"
    elif task.status is S.RUNNING:
        limit, what = policy.silent_timeout_s, "running without output"
        if task.output_at is not None and task.output_at > since:
            since = task.output_at
    else:  # cancel_failed: the verdict is out; only upstream or a new cancel moves it
        return None
    if limit is None:
        return None
    return Due(
        at=since + timedelta(seconds=limit),
        verdict=Verdict.STUCK,
        reason=f"{what} for more than {limit:g}s",
        since=since,
    )


def overdue(task: Task, policy: Policy, now: datetime) -> Due | None:
    """The task's deadline if it has passed at ``now``."""
    due = next_due(task, policy)
    return due if due is not None and due.at <= now else None


def may_resubmit(task: Task, policy: Policy) -> bool:
    """Whether a stuck task gets another attempt (else it is only flagged): with attempts
    left, and only once upstream named the attempt's work (``upstream_id``). A task not yet
    accepted upstream is retried by the submit's own retries; resubmitting it could leave
    behind work a lost answer started, which nothing would name or stop."""
    return (
        policy.on_stuck is OnStuck.RESUBMIT
        and task.attempt < policy.max_attempts
        and task.upstream_id is not None
    )
