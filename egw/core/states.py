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

Rule 2: ``cancel_failed`` is the gateway's verdict, never an upstream report.
The gateway moves a ``cancelling`` task there (`cancel_failed`) when upstream
refuses the cancel or does not confirm it within the provider's
``cancel_timeout_s``. It is not terminal: the work may still run, and that is
what the verdict says, so only an end reported by upstream moves it on (as from
``cancelling``); a ``running`` report is no news (pollers report the state a run
is in again and again: taking it would erase the verdict at the next poll), and a
new cancel (``force`` too) is allowed from it.

Rule 3: the watchdog's ``stuck`` flag never changes the status (the status is
upstream's truth); any move of the status clears it. A resubmit (`resubmit`) is
the one command that takes a task back to ``pending``: a new attempt of the same
task, with nothing of the previous attempt's upstream kept on the task but its id
(``upstream["retired"]``). An observation that names the attempt it is about
(``Observation.attempt``) applies only while the task is at that attempt: a report of
the replaced attempt that was on its way when the resubmit was recorded is stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

from egw.core.model import TERMINAL, Observation, Stuck, Task, TaskState
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
    # the cancel did not work and the work may still run: only its end is news (rule 2)
    S.CANCEL_FAILED: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.TIMED_OUT: frozenset(),
}


def can_move(current: TaskState, target: TaskState) -> bool:
    return target in TRANSITIONS[current]


def observe(task: Task, obs: Observation, *, seq: int, now: datetime) -> Task | None:
    """The task after an upstream observation, or None if it is stale or a duplicate, or
    about an attempt the task has left (rule 3)."""
    if obs.attempt is not None and obs.attempt != task.attempt:
        return None
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


def cancel_failed(task: Task, *, seq: int, now: datetime, reason: str) -> Task | None:
    """The task after its cancel was refused or not confirmed in time (rule 2); None
    unless it is ``cancelling`` (it ended, or moved on, meanwhile)."""
    if task.status is not S.CANCELLING:
        return None
    return _moved(task, S.CANCEL_FAILED, reason, None, seq=seq, now=now)


def flag_stuck(task: Task, *, seq: int, now: datetime, stuck: Stuck) -> Task | None:
    """The task flagged stuck (rule 3); None if it ended or is flagged already."""
    if task.status in TERMINAL or task.stuck is not None:
        return None
    return task.evolve(stuck=stuck, index=seq)


def resubmit(task: Task, *, seq: int, now: datetime, attempt: int) -> Task | None:
    """The task as a new attempt (rule 3), back to ``pending`` with no upstream; None
    unless it is flagged stuck, not ended, and still at ``attempt - 1`` (so that one
    stuck attempt is resubmitted once, however often it is asked)."""
    if task.status in TERMINAL or task.stuck is None or task.attempt != attempt - 1:
        return None
    moved = _moved(task, S.PENDING, f"resubmitted as attempt {attempt}", None, seq=seq, now=now)
    # the replaced attempts' upstream ids stay known, so that a provider looking for what
    # a lost submit started never takes one of them for the new attempt's
    retired = [*task.upstream.get("retired", ())]
    if task.upstream_id is not None:
        retired.append(task.upstream_id)
    return moved.evolve(
        attempt=attempt,
        upstream_id=None,
        upstream_url=None,
        upstream={"retired": retired} if retired else {},
        started_at=None,
        status_at=now,  # also from pending: the new attempt's deadlines start now
        stuck=None,
    )


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
        status_at=now if target is not task.status else task.status_at,
        stuck=None if target is not task.status else task.stuck,
        reason=reason if reason is not None else (task.reason if target is S.CANCELLING else None),
        exit_code=exit_code if exit_code is not None else task.exit_code,
        started_at=started,
        finished_at=now if target in TERMINAL else None,
        updated_at=now,
        index=seq,
    )
