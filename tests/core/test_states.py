"""The transition table, observation by observation; no event loop, no fixtures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from egw.core import states
from egw.core.model import TERMINAL, Observation, Task, TaskState
from egw.errors import InvalidTransition

S = TaskState
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def task(status: TaskState, *, upstream_id: str | None = "u1") -> Task:
    return Task(
        id="t1",
        provider="local",
        spec={},
        status=status,
        upstream_id=upstream_id,
        created_at=NOW,
        updated_at=NOW,
        index=1,
    )


# (from, observed, expected after; None = stale, recorded but not applied)
CASES = [
    (S.PENDING, S.QUEUED, S.QUEUED),
    (S.PENDING, S.RUNNING, S.RUNNING),
    (S.PENDING, S.SUCCEEDED, S.SUCCEEDED),
    (S.QUEUED, S.RUNNING, S.RUNNING),
    (S.QUEUED, S.QUEUED, None),
    (S.QUEUED, S.PENDING, None),
    (S.RUNNING, S.QUEUED, None),
    (S.RUNNING, S.RUNNING, None),
    (S.RUNNING, S.SUCCEEDED, S.SUCCEEDED),
    (S.RUNNING, S.FAILED, S.FAILED),
    (S.RUNNING, S.CANCELLED, S.CANCELLED),
    (S.CANCELLING, S.RUNNING, None),
    (S.CANCELLING, S.CANCELLED, S.CANCELLED),
    (S.CANCELLING, S.SUCCEEDED, S.SUCCEEDED),
    *[(end, seen, None) for end in TERMINAL for seen in S],
]


@pytest.mark.parametrize(("start", "seen", "expected"), CASES)
def test_observe(start: TaskState, seen: TaskState, expected: TaskState | None) -> None:
    before = task(start)
    after = states.observe(before, Observation(state=seen, exit_code=3), seq=2, now=NOW)
    if expected is None:
        assert after is None
    else:
        assert after is not None
        assert after.status is expected
        assert after.index == 2
        assert (after.finished_at is not None) == (expected in TERMINAL)


def test_running_sets_started_at_once() -> None:
    running = states.observe(task(S.QUEUED), Observation(state=S.RUNNING), seq=2, now=NOW)
    assert running is not None and running.started_at == NOW
    later = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
    done = states.observe(running, Observation(state=S.SUCCEEDED, exit_code=0), seq=3, now=later)
    assert done is not None and done.started_at == NOW and done.finished_at == later
    assert done.exit_code == 0


@pytest.mark.parametrize("end", [S.SUCCEEDED, S.FAILED, S.TIMED_OUT])
def test_cancel_of_a_finished_task_raises_and_changes_nothing(end: TaskState) -> None:
    before = task(end)
    with pytest.raises(InvalidTransition):
        states.cancel(before, seq=2, now=NOW)
    assert before.status is end


def test_cancel_is_idempotent() -> None:
    assert states.cancel(task(S.CANCELLING), seq=2, now=NOW) is None
    assert states.cancel(task(S.CANCELLED), seq=2, now=NOW) is None


def test_cancel_of_a_pending_task_without_upstream_ends_it_at_once() -> None:
    after = states.cancel(task(S.PENDING, upstream_id=None), seq=2, now=NOW)
    assert after is not None and after.status is S.CANCELLED


def test_cancel_of_a_running_task_waits_for_upstream() -> None:
    after = states.cancel(task(S.RUNNING), seq=2, now=NOW)
    assert after is not None and after.status is S.CANCELLING and after.finished_at is None


def test_timeout() -> None:
    after = states.time_out(task(S.RUNNING), seq=2, now=NOW, timeout_s=1.5)
    assert (
        after is not None and after.status is S.TIMED_OUT and after.reason == "timed out after 1.5s"
    )
    assert states.time_out(task(S.SUCCEEDED), seq=2, now=NOW, timeout_s=1) is None


def test_every_state_has_a_row_and_terminal_rows_are_empty() -> None:
    assert set(states.TRANSITIONS) == set(S)
    for end in TERMINAL:
        assert not states.TRANSITIONS[end]
