"""The breakers of each provider, one per upstream target, and who hears of their moves.

A provider's `Breakers` hold one `egw.core.circuit.Circuit` per target, made on first
use: a Nomad region, a GitHub API host (and the host its log downloads come from), a
Google API host (Cloud Run Admin, Cloud Logging). `egw.providers.http` asks them before
every call and tells them its outcome; nothing else in a provider touches them. The
local runner calls no upstream and has none.

`Circuits` is the gateway's set (the composition root makes one): it hands each move to
its listeners (the service records it in the gateway's event log, the metrics count it)
and answers ``/readyz``. The state lives in memory only: a restarted gateway starts with
every breaker closed, and the first calls find out again (and open it again) if the
upstream is still down.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog

from egw.config import CircuitConfig
from egw.core.circuit import Circuit, CircuitState, Transition
from egw.errors import CircuitOpen

log = structlog.get_logger("egw.providers.circuit")


@dataclass(frozen=True, slots=True)
class CircuitChange:
    """One breaker moved."""

    provider: str
    target: str
    transition: Transition


Listener = Callable[[CircuitChange], None]


def host_of(url: str) -> str:
    """The target a URL's call counts against: its host (and port, if it names one)."""
    return urlsplit(url).netloc.rpartition("@")[2].lower() or "unknown"


class Breakers:
    """One provider's breakers (see the module docstring)."""

    def __init__(
        self,
        provider: str,
        cfg: CircuitConfig,
        *,
        listeners: list[Listener] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.cfg = cfg
        self.listeners: list[Listener] = listeners if listeners is not None else []
        self._clock = clock
        self.targets: dict[str, Circuit] = {}
        #: the last failure toward each target, named in a refusal (why is it open?)
        self.last_error: dict[str, str] = {}

    def circuit(self, target: str) -> Circuit:
        found = self.targets.get(target)
        if found is None:
            found = self.targets[target] = Circuit(
                failures=self.cfg.failures,
                open_s=self.cfg.open_s,
                max_open_s=self.cfg.max_open_s,
                clock=self._clock,
            )
        return found

    def closed(self, target: str) -> bool:
        """Whether calls to ``target`` go freely (a caller about to make a long call, a
        blocking query, makes a short one instead while a probe decides)."""
        return self.circuit(target).state is CircuitState.CLOSED

    def admit(self, target: str) -> int:
        """A ticket for one call to ``target``; `CircuitOpen` (503, with the wait) if refused."""
        circuit = self.circuit(target)
        adm = circuit.admit()
        self._tell(target, adm.transition)
        if adm.ticket is None:
            wait = adm.retry_after_s
            raise CircuitOpen(
                f"{self.provider}: the circuit toward {target} is {circuit.state} after "
                f"{circuit.failures} failures in a row; not calling it for {wait:.0f} s "
                f"(last failure: {self.last_error.get(target, 'unknown')})",
                provider=self.provider,
                target=target,
                retry_after_s=wait,
            )
        return adm.ticket

    def success(self, target: str, ticket: int) -> None:
        self._tell(target, self.circuit(target).success(ticket))

    def failure(self, target: str, ticket: int, why: str) -> None:
        self.last_error[target] = why
        self._tell(target, self.circuit(target).failure(ticket))

    def abandon(self, target: str, ticket: int) -> None:
        self.circuit(target).abandon(ticket)

    def health(self) -> dict[str, Any]:
        """``/readyz``'s ``circuit``: the worst target's state, failures and wait, and each
        target's own."""
        targets = {
            name: {**_figures(c), "last_error": self.last_error.get(name)}
            for name, c in sorted(self.targets.items())
        }
        worst: Mapping[str, Any] = {"state": "closed", "failures": 0, "retry_after_s": 0.0}
        for figures in targets.values():
            key = (CircuitState(figures["state"]).level, figures["retry_after_s"])
            if key > (CircuitState(worst["state"]).level, worst["retry_after_s"]):
                worst = figures
        failures = max((f["failures"] for f in targets.values()), default=0)
        return {
            "state": worst["state"],
            "failures": failures,
            "retry_after_s": worst["retry_after_s"],
            "targets": targets,
        }

    def _tell(self, target: str, moved: Transition | None) -> None:
        if moved is None:
            return
        log.warning(
            "circuit_" + moved.after.value,
            provider=self.provider,
            target=target,
            before=moved.before.value,
            failures=moved.failures,
            open_s=moved.open_s,
        )
        change = CircuitChange(self.provider, target, moved)
        for listener in self.listeners:
            try:
                listener(change)
            # a listener's bug must not fail the upstream call that moved the breaker
            except Exception:
                log.exception("circuit_listener_failed", provider=self.provider, target=target)


def _figures(circuit: Circuit) -> dict[str, Any]:
    return {
        "state": circuit.state.value,
        "failures": circuit.failures,
        "retry_after_s": round(circuit.retry_after_s(), 3),
        "transitions": {s.value: n for s, n in circuit.transitions.items()},
    }


class Circuits:
    """Every provider's breakers in one gateway, and the listeners of their moves."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.listeners: list[Listener] = []
        self.by_provider: dict[str, Breakers] = {}

    def breakers(self, provider: str, cfg: CircuitConfig) -> Breakers:
        made = Breakers(provider, cfg, listeners=self.listeners, clock=self._clock)
        self.by_provider[provider] = made
        return made

    def health(self) -> dict[str, dict[str, Any]]:
        return {name: b.health() for name, b in self.by_provider.items()}
