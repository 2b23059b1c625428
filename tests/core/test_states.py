"""The transition table, observation by observation; no event loop, no fixtures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from egw.core import states
from egw.core.model import TERMINAL, Observation, Stuck, Task, TaskState
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


# --- cancel_failed (rule 2) ------------------------------------------------------------------

#: every observation from cancel_failed: only an end is news (a poller's "running" again
#: must not erase the verdict)
FROM_CANCEL_FAILED = {
    S.PENDING: None,
    S.QUEUED: None,
    S.RUNNING: None,
    S.CANCELLING: None,
    S.CANCEL_FAILED: None,
    S.SUCCEEDED: S.SUCCEEDED,
    S.FAILED: S.FAILED,
    S.CANCELLED: S.CANCELLED,
    S.TIMED_OUT: S.TIMED_OUT,
}


@pytest.mark.parametrize("seen", list(S))
def test_observe_from_cancel_failed(seen: TaskState) -> None:
    after = states.observe(task(S.CANCEL_FAILED), Observation(state=seen), seq=2, now=NOW)
    expected = FROM_CANCEL_FAILED[seen]
    assert (after.status if after is not None else None) is expected


@pytest.mark.parametrize("start", list(S))
def test_no_observation_moves_a_task_to_cancel_failed(start: TaskState) -> None:
    seen = Observation(state=S.CANCEL_FAILED, reason="upstream cannot say this")
    assert states.observe(task(start), seen, seq=2, now=NOW) is None


@pytest.mark.parametrize("start", list(S))
def test_cancel_failed_only_from_cancelling(start: TaskState) -> None:
    after = states.cancel_failed(task(start), seq=2, now=NOW, reason="409: queued")
    if start is S.CANCELLING:
        assert after is not None and after.status is S.CANCEL_FAILED
        assert after.reason == "409: queued" and after.finished_at is None
        assert after.status_at == NOW and after.index == 2
    else:
        assert after is None


def test_cancel_failed_is_not_terminal_and_a_new_cancel_is_allowed() -> None:
    assert not S.CANCEL_FAILED.terminal
    again = states.cancel(task(S.CANCEL_FAILED), seq=3, now=NOW)
    assert again is not None and again.status is S.CANCELLING
    timed = states.time_out(task(S.CANCEL_FAILED), seq=3, now=NOW, timeout_s=5)
    assert timed is not None and timed.status is S.TIMED_OUT


# --- stuck and resubmit (rule 3) ------------------------------------------------------------


def stuck_task(status: TaskState, attempt: int = 1) -> Task:
    return task(status).evolve(stuck=Stuck(reason="queued too long", since=NOW), attempt=attempt)


@pytest.mark.parametrize("start", list(S))
def test_flag_stuck_keeps_the_status(start: TaskState) -> None:
    flag = Stuck(reason="queued upstream for more than 5s", since=NOW)
    after = states.flag_stuck(task(start), seq=2, now=NOW, stuck=flag)
    if start in TERMINAL:
        assert after is None
    else:
        assert after is not None and after.status is start and after.stuck == flag
    assert states.flag_stuck(stuck_task(S.QUEUED), seq=2, now=NOW, stuck=flag) is None


@pytest.mark.parametrize(("start", "seen"), [(s, o) for s in S for o in S])
def test_a_move_clears_the_flag_and_a_stale_report_keeps_it(
    start: TaskState, seen: TaskState
) -> None:
    before = stuck_task(start)
    after = states.observe(before, Observation(state=seen), seq=2, now=NOW)
    if after is not None:
        assert after.stuck is None and after.status_at == NOW
    assert before.stuck is not None


@pytest.mark.parametrize("start", list(S))
def test_resubmit(start: TaskState) -> None:
    before = stuck_task(start).evolve(upstream={"run": 1}, upstream_url="https://x")
    after = states.resubmit(before, seq=2, now=NOW, attempt=2)
    if start in TERMINAL:
        assert after is None
        return
    assert after is not None and after.status is S.PENDING and after.attempt == 2
    assert after.upstream_id is None and after.upstream_url is None
    assert after.upstream == {"retired": ["u1"]}  # only the replaced attempt's id is kept
    assert after.stuck is None and after.reason == "resubmitted as attempt 2"


def test_each_resubmit_keeps_every_replaced_id() -> None:
    second = stuck_task(S.QUEUED, attempt=2).evolve(upstream={"retired": ["u0"], "x": 1})
    after = states.resubmit(second, seq=2, now=NOW, attempt=3)
    assert after is not None and after.upstream == {"retired": ["u0", "u1"]}


def test_resubmit_happens_once_per_attempt() -> None:
    assert states.resubmit(stuck_task(S.QUEUED, attempt=2), seq=2, now=NOW, attempt=2) is None
    assert states.resubmit(task(S.QUEUED), seq=2, now=NOW, attempt=2) is None  # not flagged


@pytest.mark.parametrize("seen", [S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED])
def test_a_report_about_a_replaced_attempt_is_stale(seen: TaskState) -> None:
    second = task(S.PENDING).evolve(attempt=2)
    assert states.observe(second, Observation(state=seen, attempt=1), seq=2, now=NOW) is None
    for about in (2, None):  # its own attempt, or a report that does not say
        after = states.observe(second, Observation(state=seen, attempt=about), seq=2, now=NOW)
        assert after is not None and after.status is seen
