"""The task lifecycle: one transition table, and the pure functions that apply it.

Theory of operation
-------------------
Rule 1: everything that decides a task's state lives in this file.

Two kinds of input move a task:

* **Observations** from upstream (a Nomad allocation update, a GitHub webhook,
  a Cloud Run poll, a local process exit). Upstream reports arrive late,
  twice and out of order, so an observation that is not a legal forward move
  (``running`` after ``succeeded``; ``queued`` after ``running``) is *stale*:
  the event log records it, the task does not move (`observe` returns None).
* **Commands** from a client (cancel). An illegal command (cancelling a task
  that already succeeded) raises `InvalidTransition` (409) and nothing
  changes; a repeated one (cancelling a task already cancelling) is a no-op.

A terminal state never changes again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

from egw.core.model import TERMINAL, Observation, Task, TaskState
from egw.errors import InvalidTransition

S = TaskState

#: the states an upstream observation may move a task to, from each state
TRANSITIONS: Final[Mapping[TaskState, frozenset[TaskState]]] = {
    S.PENDING: frozenset(
        {S.QUEUED, S.RUNNING, S.CANCELLING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT}
    ),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    S.RUNNING: frozenset({S.CANCELLING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    # once a cancel is asked for, only an end is news: a late "running" is stale
    S.CANCELLING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.TIMED_OUT: frozenset(),
}


def can_move(current: TaskState, target: TaskState) -> bool:
    return target in TRANSITIONS[current]


def observe(task: Task, obs: Observation, *, seq: int, now: datetime) -> Task | None:
    """The task after an upstream observation, or None if it is stale or a duplicate."""
    if not can_move(task.status, obs.state):
        return None
    return _moved(task, obs.state, obs.reason, obs.exit_code, seq=seq, now=now)


def cancel(task: Task, *, seq: int, now: datetime, reason: str = "cancel requested") -> Task | None:
    """The task after a cancel command; None when it is already cancelling or cancelled.

    A task not yet accepted upstream (``pending``) has nothing to stop, so it is
    ``cancelled`` at once; otherwise it is ``cancelling`` until upstream confirms.
    Raises `InvalidTransition` for a task that ended otherwise.
    """
    if task.status in (S.CANCELLING, S.CANCELLED):
        return None
    if task.status in TERMINAL:
        raise InvalidTransition(
            f"task {task.id} already ended {task.status}; it cannot be cancelled",
            details={"status": str(task.status)},
        )
    target = S.CANCELLED if task.status is S.PENDING and task.upstream_id is None else S.CANCELLING
    return _moved(task, target, reason, None, seq=seq, now=now)


def time_out(task: Task, *, seq: int, now: datetime, timeout_s: float) -> Task | None:
    """The task after egw's own timeout fired; None if it already ended."""
    if task.status in TERMINAL:
        return None
    return _moved(task, S.TIMED_OUT, f"timed out after {timeout_s:g}s", None, seq=seq, now=now)


def _moved(
    task: Task,
    target: TaskState,
    reason: str | None,
    exit_code: int | None,
    *,
    seq: int,
    now: datetime,
) -> Task:
    started = task.started_at
    if started is None and target is S.RUNNING:
        started = now
    return task.evolve(
        status=target,
        reason=reason if reason is not None else (task.reason if target is S.CANCELLING else None),
        exit_code=exit_code if exit_code is not None else task.exit_code,
        started_at=started,
        finished_at=now if target in TERMINAL else None,
        updated_at=now,
        index=seq,
    )
