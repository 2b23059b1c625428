"""The breaker's table over every (state, signal) pair, and the machine on a hand-driven clock."""

from __future__ import annotations

import itertools

import pytest

from egw.core.circuit import (
    PROBE_WAIT_S,
    TRANSITIONS,
    Circuit,
    CircuitState,
    Signal,
    next_state,
)

C, H, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN

EXPECTED = {
    (C, Signal.SUCCESS): C,
    (C, Signal.FAILURE): C,
    (C, Signal.TRIP): OPEN,
    (C, Signal.EXPIRE): C,  # nothing to expire
    (H, Signal.SUCCESS): C,
    (H, Signal.FAILURE): OPEN,
    (H, Signal.TRIP): OPEN,
    (H, Signal.EXPIRE): H,
    (OPEN, Signal.SUCCESS): OPEN,  # a late answer does not close it: only the probe does
    (OPEN, Signal.FAILURE): OPEN,
    (OPEN, Signal.TRIP): OPEN,
    (OPEN, Signal.EXPIRE): H,
}


@pytest.mark.parametrize(("state", "signal"), list(itertools.product(CircuitState, Signal)))
def test_every_pair(state: CircuitState, signal: Signal) -> None:
    assert next_state(state, signal) is EXPECTED[(state, signal)]


def test_the_table_lists_only_moves_it_means() -> None:
    assert set(TRANSITIONS) <= set(EXPECTED)
    assert {k: v for k, v in EXPECTED.items() if k in TRANSITIONS} == dict(TRANSITIONS)


def test_levels() -> None:
    assert [s.level for s in (C, H, OPEN)] == [0, 1, 2]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    clock: Clock, failures: int = 3, open_s: float = 10.0, max_open_s: float = 35.0
) -> Circuit:
    return Circuit(failures=failures, open_s=open_s, max_open_s=max_open_s, clock=clock)


def trip(c: Circuit, n: int) -> None:
    for _ in range(n):
        adm = c.admit()
        assert adm.ticket is not None
        c.failure(adm.ticket)


def test_consecutive_failures_trip_it_and_a_success_clears_the_count() -> None:
    clock = Clock()
    c = make(clock)
    trip(c, 2)
    assert (c.state, c.failures) == (C, 2)
    ok = c.admit()
    assert ok.ticket is not None and c.success(ok.ticket) is None  # closed -> closed: no move
    assert c.failures == 0
    trip(c, 2)
    adm = c.admit()
    assert adm.ticket is not None
    moved = c.failure(adm.ticket)
    assert moved is not None and (moved.before, moved.after, moved.failures) == (C, OPEN, 3)
    assert moved.open_s == 10.0 and c.state is OPEN
    assert c.transitions[OPEN] == 1


def test_open_refuses_with_the_time_left_then_lets_one_probe_through() -> None:
    clock = Clock()
    c = make(clock)
    trip(c, 3)
    clock.now += 4
    refused = c.admit()
    assert not refused.allowed and refused.retry_after_s == pytest.approx(6.0)
    clock.now += 6
    probe = c.admit()
    assert probe.allowed and probe.transition is not None
    assert (probe.transition.before, probe.transition.after) == (OPEN, H)
    other = c.admit()
    assert not other.allowed and other.retry_after_s == PROBE_WAIT_S
    assert probe.ticket is not None
    closed = c.success(probe.ticket)
    assert closed is not None and (closed.before, closed.after) == (H, C)
    assert c.admit().allowed and c.failures == 0 and c.retry_after_s() == 0.0


def test_a_failed_probe_reopens_for_longer_capped_and_a_success_resets_the_backoff() -> None:
    clock = Clock()
    c = make(clock)
    trip(c, 3)
    seen = []
    for _ in range(4):
        clock.now += c.open_s
        probe = c.admit()
        assert probe.ticket is not None
        moved = c.failure(probe.ticket)
        assert moved is not None and (moved.before, moved.after) == (H, OPEN)
        seen.append(moved.open_s)
    assert seen == [20.0, 35.0, 35.0, 35.0]  # 10 * 2**n, capped at max_open_s
    clock.now += c.open_s
    probe = c.admit()
    assert probe.ticket is not None
    c.success(probe.ticket)
    trip(c, 3)
    assert c.open_s == 10.0


def test_late_outcomes_of_calls_let_through_before_a_move_count_for_nothing() -> None:
    clock = Clock()
    c = make(clock, failures=1)
    early = c.admit()
    late = c.admit()
    assert early.ticket is not None and late.ticket is not None
    c.failure(early.ticket)
    assert c.state is OPEN
    assert c.failure(late.ticket) is None and c.success(late.ticket) is None
    assert c.state is OPEN and c.open_s == 10.0
    clock.now += 10
    probe = c.admit()
    assert probe.ticket is not None
    assert c.success(late.ticket) is None and c.state is H  # only the probe decides


def test_an_abandoned_probe_frees_the_slot() -> None:
    clock = Clock()
    c = make(clock, failures=1)
    trip(c, 1)
    clock.now += 10
    probe = c.admit()
    assert probe.ticket is not None and not c.admit().allowed
    c.abandon(probe.ticket)
    again = c.admit()
    assert again.allowed and again.transition is None and c.state is H
    c.abandon(-1)  # a stale ticket frees nothing
    assert not c.admit().allowed


@pytest.mark.parametrize(("failures", "open_s", "max_open_s"), [(0, 1, 1), (1, 0, 1), (1, 2, 1)])
def test_bad_figures_are_refused(failures: int, open_s: float, max_open_s: float) -> None:
    with pytest.raises(ValueError, match="failures"):
        Circuit(failures=failures, open_s=open_s, max_open_s=max_open_s, clock=Clock())
