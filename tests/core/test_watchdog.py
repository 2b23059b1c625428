"""The watchdog's deadlines, pure: computed from what the task record stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from egw.core.model import TERMINAL, Stuck, Task, TaskState
from egw.core.watchdog import OnStuck, Policy, Verdict, may_resubmit, next_due, overdue

S = TaskState
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ALL = Policy(cancel_timeout_s=10, pending_timeout_s=20, queued_timeout_s=30, silent_timeout_s=40)


def task(status: TaskState, **kw: object) -> Task:
    return Task(
        id="t1", provider="local", spec={}, status=status, created_at=T0, updated_at=T0,
        status_at=kw.pop("status_at", T0), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "after_s", "verdict"),
    [
        (S.CANCELLING, 10, Verdict.CANCEL_FAILED),
        (S.PENDING, 20, Verdict.STUCK),
        (S.QUEUED, 30, Verdict.STUCK),
        (S.RUNNING, 40, Verdict.STUCK),
    ],
)
def test_each_status_has_its_deadline(status: TaskState, after_s: int, verdict: Verdict) -> None:
    due = next_due(task(status), ALL)
    assert due is not None and due.verdict is verdict
    assert due.at == T0 + timedelta(seconds=after_s) and due.since == T0
    assert overdue(task(status), ALL, due.at - timedelta(milliseconds=1)) is None
    assert overdue(task(status), ALL, due.at) == due


@pytest.mark.parametrize("status", [*TERMINAL, S.CANCEL_FAILED])
def test_no_deadline_once_ended_or_after_the_cancel_verdict(status: TaskState) -> None:
    assert next_due(task(status), ALL) is None


def test_no_deadline_without_a_setting() -> None:
    for status in S:
        assert next_due(task(status), Policy()) is None
    assert not Policy().watches and ALL.watches


def test_a_flagged_task_waits_for_a_move_but_a_cancel_deadline_still_counts() -> None:
    flag = Stuck(reason="queued", since=T0)
    assert next_due(task(S.QUEUED, stuck=flag), ALL) is None
    due = next_due(task(S.CANCELLING, stuck=flag), ALL)
    assert due is not None and due.verdict is Verdict.CANCEL_FAILED


def test_silence_counts_from_the_last_output() -> None:
    later = T0 + timedelta(seconds=100)
    due = next_due(task(S.RUNNING, output_at=later), ALL)
    assert due is not None and due.at == later + timedelta(seconds=40) and due.since == later
    # output before the task started running does not count
    early = next_due(task(S.RUNNING, output_at=T0 - timedelta(seconds=5)), ALL)
    assert early is not None and early.since == T0


def test_a_record_from_before_status_at_falls_back() -> None:
    old = Task(
        id="t1", provider="local", spec={}, status=S.QUEUED, created_at=T0,
        updated_at=T0 + timedelta(seconds=3),
    )  # fmt: skip
    due = next_due(old, ALL)
    assert due is not None and due.since == T0 + timedelta(seconds=3)
    pending = next_due(old.evolve(status=S.PENDING), ALL)
    assert pending is not None and pending.since == T0


def test_resubmit_is_bounded_by_max_attempts() -> None:
    policy = Policy(queued_timeout_s=1, on_stuck=OnStuck.RESUBMIT, max_attempts=3)
    assert may_resubmit(task(S.QUEUED, attempt=2, upstream_id="7"), policy)
    assert not may_resubmit(task(S.QUEUED, attempt=3, upstream_id="7"), policy)
    # not accepted upstream: the submit's own retries go on; nothing is resubmitted
    assert not may_resubmit(task(S.PENDING, attempt=1), policy)
    assert not may_resubmit(task(S.QUEUED), Policy(on_stuck=OnStuck.CANCEL, max_attempts=3))
