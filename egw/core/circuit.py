"""A circuit breaker toward one upstream target: one transition table, and a pure machine.

Theory of operation
-------------------
Rule 1: everything that decides a breaker's state lives in this file. It does no I/O
and reads no clock of its own: the clock (monotonic seconds) is handed in.

* **closed**: every call goes. Each failure (a connection error, a timeout, a 5xx:
  the caller judges, see ``egw/providers/http.py``) adds one to a count of
  *consecutive* failures, which any success clears. The failure that reaches the
  threshold **trips** the breaker: it opens.
* **open**: every call is refused at once, told how long until the breaker will let
  a probe through (``retry_after_s``). The first call asked for once the open time has
  passed **expires** it: the breaker goes half-open and that call is the probe.
* **half_open**: one probe at a time; other calls are refused (told to come back in a
  moment). The probe's success closes the breaker; its failure opens it again, for
  twice the previous open time (capped at ``max_open_s``), until a success closes it.

An outcome counts only in the state its call was let through in (its *ticket* names
that state's generation): a call that was already in flight when the breaker opened,
and fails late, does not open it again for longer; one that succeeds late does not
close it; only the probe decides a half-open breaker. A probe abandoned without an
outcome (its caller was cancelled) frees the probe's slot for the next call.

Why not a library: the closest, purgatory 3.0.1 (2024), gives named breakers from a
factory with a threshold, one fixed open time (``ttl``), excluded exceptions, state in
memory or Redis and event hooks. It has no backoff of the open time, documents no clock
to inject, and judges only exceptions raised inside its ``async with`` (egw's calls
return a 5xx as a value, judged in one place: ``egw/providers/http.py``), awaiting its
unit of work on every check. aiobreaker 1.2.0 was last released in 2021; pybreaker
and circuitbreaker wrap a whole function and judge what it raises. What egw needs is
this table and a hundred lines, tested over every pair (``tests/core/test_circuit.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class CircuitState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def level(self) -> int:
        """The gauge's value (``egw_circuit_state``): 0 closed, 1 half-open, 2 open."""
        return _LEVELS[self]


_LEVELS: Final[Mapping[CircuitState, int]] = {
    CircuitState.CLOSED: 0,
    CircuitState.HALF_OPEN: 1,
    CircuitState.OPEN: 2,
}


class Signal(StrEnum):
    SUCCESS = "success"
    #: a failure below the threshold (closed), or the probe's failure (half-open)
    FAILURE = "failure"
    #: the failure that reaches the threshold
    TRIP = "trip"
    #: a call asked to go once the open time had passed
    EXPIRE = "expire"


C, H, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN

#: where each signal moves the breaker from each state; a pair not listed moves nothing
TRANSITIONS: Final[Mapping[tuple[CircuitState, Signal], CircuitState]] = {
    (C, Signal.SUCCESS): C,
    (C, Signal.FAILURE): C,
    (C, Signal.TRIP): OPEN,
    (OPEN, Signal.EXPIRE): H,
    (H, Signal.SUCCESS): C,
    (H, Signal.FAILURE): OPEN,
    (H, Signal.TRIP): OPEN,
}

#: what a call refused by a half-open breaker (its probe still out) is told to wait
PROBE_WAIT_S: Final = 1.0


def next_state(state: CircuitState, signal: Signal) -> CircuitState:
    """The table's answer; a pair it does not list leaves the state as it is."""
    return TRANSITIONS.get((state, signal), state)


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of state, for the event log, the metrics and the logs."""

    before: CircuitState
    after: CircuitState
    #: consecutive failures counted when it happened
    failures: int
    #: with ``after`` open: how long it stays open
    open_s: float | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to a call that asks to go: a ``ticket`` (go) or a wait (refused)."""

    ticket: int | None
    retry_after_s: float = 0.0
    transition: Transition | None = None

    @property
    def allowed(self) -> bool:
        return self.ticket is not None


class Circuit:
    """One breaker (see the module docstring); ``failures`` >= 1, ``open_s`` <= ``max_open_s``."""

    def __init__(
        self, *, failures: int, open_s: float, max_open_s: float, clock: Callable[[], float]
    ) -> None:
        if failures < 1 or not 0 < open_s <= max_open_s:
            raise ValueError("failures >= 1 and 0 < open_s <= max_open_s")
        self.threshold = failures
        self.base_open_s = open_s
        self.max_open_s = max_open_s
        self._clock = clock
        self.state = CircuitState.CLOSED
        #: consecutive failures (closed), or those that opened it (open, half-open)
        self.failures = 0
        #: times the probe failed in a row since the breaker last closed
        self.reopens = 0
        #: how long the breaker stays open this time, and when it may go half-open
        self.open_s = 0.0
        self.until = 0.0
        #: one more on every transition: a ticket is the generation it was issued in
        self.generation = 0
        self.probing = False
        #: transitions so far, by the state moved to
        self.transitions: dict[CircuitState, int] = dict.fromkeys(CircuitState, 0)

    def retry_after_s(self) -> float:
        """Seconds until a refused call may be let through (0 when closed)."""
        if self.state is OPEN:
            return max(0.0, self.until - self._clock())
        if self.state is H and self.probing:
            return PROBE_WAIT_S
        return 0.0

    def admit(self) -> Admission:
        """May a call go now? Opens the way for a probe once the open time has passed."""
        if self.state is OPEN and self._clock() >= self.until:
            moved = self._move(Signal.EXPIRE)
            self.probing = True
            return Admission(self.generation, transition=moved)
        if self.state is C:
            return Admission(self.generation)
        if self.state is H and not self.probing:
            self.probing = True
            return Admission(self.generation)
        return Admission(None, self.retry_after_s())

    def success(self, ticket: int) -> Transition | None:
        """The call let through with ``ticket`` got an answer from upstream."""
        if ticket != self.generation:
            return None
        self.failures = 0
        if self.state is H:
            self.reopens = 0
        return self._move(Signal.SUCCESS)

    def failure(self, ticket: int) -> Transition | None:
        """The call let through with ``ticket`` failed (connection, timeout, 5xx)."""
        if ticket != self.generation or self.state is OPEN:
            return None
        self.failures += 1
        if self.state is H:
            self.reopens += 1
            return self._move(Signal.FAILURE)
        return self._move(Signal.TRIP if self.failures >= self.threshold else Signal.FAILURE)

    def abandon(self, ticket: int) -> None:
        """The call let through with ``ticket`` ended without an outcome (cancelled)."""
        if ticket == self.generation and self.state is H:
            self.probing = False

    def _move(self, signal: Signal) -> Transition | None:
        before = self.state
        after = next_state(before, signal)
        if after is before:
            return None
        self.state = after
        self.generation += 1
        self.probing = False
        self.transitions[after] += 1
        if after is OPEN:
            self.open_s = min(self.max_open_s, self.base_open_s * 2**self.reopens)
            self.until = self._clock() + self.open_s
            return Transition(before, after, self.failures, self.open_s)
        return Transition(before, after, self.failures)
